"""How far above the floor of its own stack a fhircare read is, and whether a goal stated as a
ratio to HAPI is below that floor.

One client (`--client`: httpx, as in `bench_api.py`, or lean, `lean_http.SyncClient`: one
kept-alive connection, httptools parsing, a fraction of httpx's own cost) reads Patients from
the servers, taking turns round by round after a warm-up: `fhircare serve` (embedded store)
on each HTTP server of `--servers` (uvicorn by default; none with `--no-fhircare`), a bare
ASGI app (`asgi_floor.py`: no routing, store, audit or logging) on each HTTP server asked
for with `--floor` (uvicorn with uvloop and httptools, as `fhircare serve` runs, by default;
granian, a Rust HTTP server, with options of its own after the name) and, unless
`--no-hapi`, the project's HAPI FHIR server. Prints `name=value` lines: the median and p99
of each, what fhircare adds over the first floor, and the read median that 2x HAPI would
need next to the floor's.

With `--clients N` it then runs N concurrent clients reading only (`mixed_load.READS`, in
generator processes of their own) for `--duration` seconds on each server but HAPI, taking
turns for `--load-rounds` rounds, and prints requests/s, p50, p99 and the CPU each server
(with its worker processes) spent per request.

    python benchmarks/bench_floor.py [--rounds 6 --per-round 300 --no-hapi --client lean]
    python benchmarks/bench_floor.py --no-fhircare --no-hapi --floor uvicorn \\
        --floor "granian --runtime-threads 2" --clients 32
"""

from __future__ import annotations

import argparse
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import bench_api as api
from mixed_load import READS, Tally, run_load

HERE = Path(__file__).resolve().parent
UVICORN = ["-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
GRANIAN = ["-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--workers", "1"]


def floor_command(spec: str, port: int) -> list[str]:
    """The command serving `asgi_floor:app` on `port` for a spec such as `uvicorn` or
    `granian --runtime-threads 2` (the server's own options after its name)."""
    server, *extra = shlex.split(spec)
    if server == "uvicorn":
        common = [*UVICORN, "--app-dir", str(HERE), "--log-level", "warning"]
    elif server == "granian":
        common = [*GRANIAN, "--working-dir", str(HERE), "--log-level", "warning"]
    else:
        raise ValueError(f"unknown floor server {server!r} (uvicorn or granian)")
    return [sys.executable, *common, "--port", str(port), *extra, "asgi_floor:app"]


def start_floor(spec: str) -> tuple[str, subprocess.Popen]:
    port = api.free_port()
    proc = subprocess.Popen(
        floor_command(spec, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}/fhir"
    api.wait_ready(f"{base}/Patient/ready", 60, proc)
    return base, proc


def floor_names(specs: list[str]) -> list[str]:
    """floor_uvicorn, floor_granian, floor_granian_2, ...: one name per spec."""
    names: list[str] = []
    for spec in specs:
        stem = f"floor_{shlex.split(spec)[0]}"
        count = sum(1 for n in names if n == stem or n.startswith(stem + "_"))
        names.append(stem if count == 0 else f"{stem}_{count + 1}")
    return names


def run_reads_load(
    targets: list[api.Target],
    pids: dict[str, int],
    clients: int,
    duration: float,
    rounds: int,
    processes: int,
    seed: int,
) -> None:
    """Reads only from `clients` concurrent clients, the targets taking turns."""
    ids = {t.name: [pid for pid, _ in t.patients] for t in targets}
    tallies = {t.name: Tally() for t in targets}
    cpu = {t.name: 0.0 for t in targets}
    with ProcessPoolExecutor(processes) as pool:
        for t in targets:  # connections, caches: not measured
            run_load(pool, processes, t.base, clients, 5.0, ids[t.name], seed, READS)
        for r in range(rounds):
            for t in targets if r % 2 == 0 else list(reversed(targets)):
                before = api.cpu_seconds(pids[t.name])
                tally = run_load(
                    pool, processes, t.base, clients, duration, ids[t.name], seed + r, READS
                )
                after = api.cpu_seconds(pids[t.name])
                if before is not None and after is not None:
                    cpu[t.name] += after - before
                tallies[t.name].merge(tally)
                tallies[t.name].elapsed = duration * (r + 1)
    name = f"reads{clients}"
    for who, tally in tallies.items():
        every = tally.latencies.get("read", [])
        rps = len(every) / tally.elapsed
        print(f"{name}_{who}_requests={len(every)}")
        print(f"{name}_{who}_rps={rps:.1f}")
        if every:
            print(f"{name}_{who}_p50_ms={statistics.median(every):.2f}")
            print(f"{name}_{who}_p99_ms={api.p99(every):.2f}")
            print(f"{name}_{who}_server_cpu_ms_per_request={cpu[who] * 1000 / len(every):.3f}")
        print(f"{name}_{who}_errors={tally.errors}")
        print(f"{name}_{who}_loadgen_cpu_share={tally.cpu_seconds / tally.elapsed / api.CORES:.2f}")
        for problem in tally.first_errors:
            print(f"# {name} {who} error: {problem}")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="one-client rounds (0: none)")
    ap.add_argument("--per-round", type=int, default=300, help="reads per target per round")
    ap.add_argument("--warmup", type=float, default=20.0, help="unmeasured seconds per target")
    ap.add_argument("--no-hapi", action="store_true", help="no HAPI server")
    ap.add_argument("--no-fhircare", action="store_true", help="no fhircare server")
    ap.add_argument(
        "--servers",
        default="uvicorn",
        help="HTTP servers of fhircare, e.g. uvicorn,granian: one fhircare each "
        "(fhircare, then fhircare_granian)",
    )
    ap.add_argument(
        "--floor",
        action="append",
        help="a server for the floor app, repeatable: uvicorn (default) or granian, "
        "its own options after the name, e.g. 'granian --runtime-threads 2'",
    )
    ap.add_argument("--clients", type=int, help="then reads from N concurrent clients")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per load run")
    ap.add_argument("--load-rounds", type=int, default=2, help="load runs per server")
    ap.add_argument("--processes", type=int, default=2, help="load generator processes")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--client",
        choices=api.CLIENTS,
        default="httpx",
        help="the one-client rounds' HTTP client: httpx (default) or lean (lean_http)",
    )
    args = ap.parse_args()
    specs = args.floor or ["uvicorn"]
    names = floor_names(specs)

    stops = []
    pids: dict[str, int] = {}
    bases: dict[str, str] = {}
    try:
        folder = tempfile.TemporaryDirectory(prefix="bench-floor-")
        stops.append(folder.cleanup)
        for i, server in enumerate([] if args.no_fhircare else args.servers.split(",")):
            name = "fhircare" if i == 0 else f"fhircare_{server}"
            bases[name], fc = api.start_fhircare(Path(folder.name) / f"data-{i}", server)
            pids[name] = fc.pid
            stops.append(lambda fc=fc: (fc.terminate(), fc.wait(30)))
            print(f"{name}_server={server}")
        for name, spec in zip(names, specs, strict=True):
            bases[name], proc = start_floor(spec)
            pids[name] = proc.pid
            stops.append(lambda proc=proc: (proc.terminate(), proc.wait(30)))
            print(f"{name}_server={spec}")
        if not args.no_hapi:
            hapi_base, port = api.start_hapi()
            script = str(api.ROOT / "scripts" / "hapi")
            stops.append(lambda: subprocess.run([script, "stop", str(port)], check=False))
            bases["hapi"] = hapi_base
        targets = [api.Target(n, b, api.make_client(args.client, 60.0)) for n, b in bases.items()]
        print(f"client={args.client}")
        rng = random.Random(args.seed)
        for t in targets:
            if t.name.startswith("floor"):
                t.patients = [(f"p{i}", "") for i in range(2000)]
            else:
                t.patients = [(pid, "") for pid in api.seed_patients(t)]
        if args.rounds:
            phase = api.Phase("read", api.reads, args.per_round)
            times = api.run_phase(phase, targets, args.rounds, rng.randrange(1 << 30), args.warmup)
            one_client_report(times, names[0])
        if args.clients:
            loaded = [t for t in targets if t.name != "hapi"]
            run_reads_load(
                loaded,
                pids,
                args.clients,
                args.duration,
                args.load_rounds,
                args.processes,
                args.seed,
            )
    finally:
        for stop in reversed(stops):
            stop()


def one_client_report(times: dict[str, list[float]], floor: str) -> None:
    median = {name: statistics.median(v) for name, v in times.items()}
    print(f"read_requests={len(next(iter(times.values())))}")
    for name, values in times.items():
        print(f"read_{name}_median_ms={median[name]:.3f}")
        print(f"read_{name}_p99_ms={api.p99(values):.3f}")
    if "fhircare" in median:
        print(f"read_fhircare_over_floor_ms={median['fhircare'] - median[floor]:.3f}")
        if "hapi" in median:
            print(f"read_ratio_median={median['hapi'] / median['fhircare']:.2f}")
            print(f"read_2x_hapi_needs_ms={median['hapi'] / 2:.3f}")
    if "hapi" in median:
        print(f"read_floor_ratio_median={median['hapi'] / median[floor]:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
