"""The same FHIR HTTP workload against `fhircare serve` and the real HAPI FHIR server, taking
turns in one run: creates, reads, patient searches, token searches, 500-entry transactions
and Patient/$everything. Prints `name=value` lines: median and p99 latency per target and the
HAPI/fhircare ratio of each (above 1: fhircare is faster).

    python benchmarks/bench_api.py                       # starts both servers on free ports
    python benchmarks/bench_api.py --hapi URL --fhircare URL [--rounds 4 --scale 1]
    python benchmarks/bench_api.py --client lean         # one client without httpx's own cost
    python benchmarks/bench_api.py --clients 32,64,128 [--duration 30 --rounds 2]
    python benchmarks/bench_api.py --clients 32 --fhircare-workers 1,2   # both against one HAPI

With `--clients N` (one or several counts) it runs instead N concurrent clients for
`--duration` seconds on each server, 30% creates / 40% reads / 30% name searches
(`mixed_load.py`: generator processes separate from both servers, their CPU reported),
after seeding 2,000 Patients and an unmeasured warm-up (`--warmup`, 240 s: HAPI's C2 JIT
keeps raising its throughput for minutes; the requests/s of each 5 s are printed), the
servers taking turns round by round; it prints requests/s, p50, p99 and errors per server,
the ratios, and the CPU each server spent per request (from /proc, for the servers it
started).

Both servers run with their stock settings (fhircare: embedded store, fsync and audit on;
HAPI: `scripts/hapi`, H2 in memory, with the official image's JVM settings: no JIT or GC
options, see `hapi_jvm.py`). Each phase runs in rounds; in every round both targets do the
same number of requests, the one going first alternating, after an unmeasured warm-up of
`--warmup` seconds per phase (20; the JVM's C2 JIT). Search and `$everything` requests use a
different patient each time, so neither server answers from a cache of the same query.

The one-client workload is a list of `Phase`s, each making independent single-request `Op`s,
sent through one client per server: `--client httpx` (the default; about 0.3 ms a request of
pure-Python HTTP inside both servers' latencies, which narrows the ratios) or `--client lean`
(`lean_http.SyncClient`: one kept-alive connection, httptools parsing), the same requests and
the same checks of the answers either way.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hapi_jvm
import httpx
from lean_http import Reply, SyncClient
from mixed_load import SURNAMES, Tally, run_load, seed_bundle

ROOT = Path(__file__).resolve().parent.parent
MRN = "http://fhircare.org/fhir/sid/bench-mrn"
LOINC_WEIGHT = {"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}
CORES = os.cpu_count() or 1
JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


# ---- targets ------------------------------------------------------------------------------


@dataclass
class Target:
    """One FHIR server under test and what the workload created on it."""

    name: str
    base: str
    http: httpx.Client | SyncClient
    patients: list[tuple[str, str]] = field(default_factory=list)  # (id, mrn)
    rich: list[str] = field(default_factory=list)  # patients with observations

    def request(self, method: str, path: str, expect: int, **kwargs: Any) -> httpx.Response | Reply:
        r = self.http.request(method, f"{self.base}/{path}", headers=JSON, **kwargs)
        if r.status_code != expect:
            raise RuntimeError(f"{self.name}: {method} {path} -> {r.status_code} {r.text[:300]}")
        return r


Op = Callable[[Target], None]  # one request; raises on a wrong answer

CLIENTS = ("httpx", "lean")


def make_client(kind: str, timeout: float) -> httpx.Client | SyncClient:
    """The one-client HTTP client: httpx (the default, as in the figures before
    2026-12-06) or `lean_http.SyncClient` (one kept-alive connection, httptools parsing:
    about 0.3 ms a request less of the client's own time inside both servers' latencies)."""
    if kind == "httpx":
        return httpx.Client(timeout=httpx.Timeout(timeout))
    if kind == "lean":
        return SyncClient(timeout=timeout)
    raise ValueError(f"unknown client {kind!r} (httpx or lean)")


@dataclass
class Phase:
    """A named kind of request; `ops(target, n)` makes n requests' worth of work."""

    name: str
    make: Callable[[Target, int, random.Random], Iterator[Op]]
    per_round: int
    warmup: int = 5


def _patient(mrn: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": mrn}],
        "name": [{"family": f"Bench{mrn[:6]}", "given": ["Api"]}],
        "gender": "female",
        "birthDate": "1958-07-14",
    }


def _observation(subject: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [LOINC_WEIGHT]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2024-05-01T09:30:00Z",
        "valueQuantity": {
            "value": value,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    }


def transaction(patients: int = 100, per_patient: int = 4) -> dict[str, Any]:
    """A transaction of `patients` new Patients and `per_patient` Observations each
    (500 entries by default), linked by urn:uuid references."""
    entries = []
    for i in range(patients):
        full = f"urn:uuid:{uuid.uuid4()}"
        mrn = uuid.uuid4().hex[:16]
        entries.append(
            {
                "fullUrl": full,
                "resource": _patient(mrn),
                "request": {"method": "POST", "url": "Patient"},
            }
        )
        entries += [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": _observation(full, 60 + (i + j) % 30),
                "request": {"method": "POST", "url": "Observation"},
            }
            for j in range(per_patient)
        ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


# ---- the workload -------------------------------------------------------------------------


def creates(target: Target, n: int, rng: random.Random) -> Iterator[Op]:
    for _ in range(n):
        mrn = uuid.uuid4().hex[:16]

        def op(t: Target, mrn: str = mrn) -> None:
            made = t.request("POST", "Patient", 201, json=_patient(mrn)).json()
            t.patients.append((made["id"], mrn))

        yield op


def reads(target: Target, n: int, rng: random.Random) -> Iterator[Op]:
    for pid, _ in rng.sample(target.patients, min(n, len(target.patients))):
        yield lambda t, pid=pid: _check_id(t.request("GET", f"Patient/{pid}", 200), pid)


def patient_searches(target: Target, n: int, rng: random.Random) -> Iterator[Op]:
    for pid in _distinct(target.rich, n, rng):
        yield lambda t, pid=pid: _check_total(
            t.request("GET", "Observation", 200, params={"subject": f"Patient/{pid}"}), 4
        )


def token_searches(target: Target, n: int, rng: random.Random) -> Iterator[Op]:
    for _, mrn in _distinct(target.patients, n, rng):
        yield lambda t, mrn=mrn: _check_total(
            t.request("GET", "Patient", 200, params={"identifier": f"{MRN}|{mrn}"}), 1
        )


def transactions(target: Target, n: int, rng: random.Random) -> Iterator[Op]:
    for _ in range(n):
        bundle = transaction()

        def op(t: Target, bundle: dict[str, Any] = bundle) -> None:
            out = t.request("POST", "", 200, json=bundle).json()
            ids = [e["response"]["location"].split("/")[1] for e in out["entry"]]
            if len(ids) != len(bundle["entry"]):
                raise RuntimeError(f"{t.name}: transaction answered {len(ids)} entries")
            t.rich += [ids[i] for i in range(0, len(ids), 5)]  # the Patients (every 5th)

        yield op


def everything(target: Target, n: int, rng: random.Random) -> Iterator[Op]:
    for pid in _distinct(target.rich, n, rng):
        yield lambda t, pid=pid: _check_entries(
            t.request("GET", f"Patient/{pid}/$everything", 200), 5
        )


def _distinct(items: list[Any], n: int, rng: random.Random) -> list[Any]:
    return rng.sample(items, min(n, len(items)))


def _check_id(r: httpx.Response | Reply, pid: str) -> None:
    if r.json().get("id") != pid:
        raise RuntimeError(f"read answered {r.json().get('id')} for {pid}")


def _check_total(r: httpx.Response | Reply, want: int) -> None:
    got = len(r.json().get("entry") or [])
    if got != want:
        raise RuntimeError(f"{r.url} found {got}, expected {want}")


def _check_entries(r: httpx.Response | Reply, want: int) -> None:
    got = sum(
        1
        for e in r.json().get("entry") or []
        if e["resource"]["resourceType"] != "OperationOutcome"
    )
    if got < want:
        raise RuntimeError(f"{r.url} returned {got} resources, expected {want}")


def phases(scale: float) -> list[Phase]:
    """The workload, in order (later phases use what earlier ones created)."""

    def k(n: int) -> int:
        return max(1, round(n * scale))

    return [
        Phase("create", creates, k(75)),
        Phase("read", reads, k(100)),
        Phase("transaction_500", transactions, k(2), warmup=1),
        Phase("search_patient", patient_searches, k(60)),
        Phase("search_token", token_searches, k(60)),
        Phase("everything", everything, k(40)),
    ]


# ---- running --------------------------------------------------------------------------------


def run_phase(
    phase: Phase, targets: list[Target], rounds: int, seed: int, warmup: float
) -> dict[str, list[float]]:
    """Latencies (ms) per target; the targets take turns, round by round, after an
    unmeasured warm-up of at least `phase.warmup` requests and `warmup` seconds each."""
    rng = random.Random(seed)
    for t in targets:
        deadline = time.monotonic() + warmup
        done = 0
        while done < phase.warmup or time.monotonic() < deadline:
            for op in phase.make(t, phase.warmup, rng):
                op(t)
                done += 1
    times: dict[str, list[float]] = {t.name: [] for t in targets}
    for r in range(rounds):
        order = targets if r % 2 == 0 else list(reversed(targets))
        for t in order:
            for op in phase.make(t, phase.per_round, rng):
                start = time.perf_counter()
                op(t)
                times[t.name].append((time.perf_counter() - start) * 1000)
    return times


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def report(name: str, times: dict[str, list[float]]) -> None:
    print(f"{name}_requests={len(times['fhircare'])}")
    for who, values in times.items():
        print(f"{name}_{who}_median_ms={statistics.median(values):.2f}")
        print(f"{name}_{who}_p99_ms={p99(values):.2f}")
    hapi = times.get("hapi")
    for who, fc in times.items():
        if hapi is None or who == "hapi":
            continue
        tag = "" if who == "fhircare" else f"_{who}"
        print(f"{name}_ratio{tag}_median={statistics.median(hapi) / statistics.median(fc):.2f}")
        print(f"{name}_ratio{tag}_p99={p99(hapi) / p99(fc):.2f}")
    sys.stdout.flush()


# ---- servers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def start_fhircare(
    data: Path, server: str = "uvicorn", workers: int = 1
) -> tuple[str, subprocess.Popen]:
    """`fhircare serve` on a free port, on the HTTP server `server` (uvicorn or granian),
    with `workers` worker processes (`--workers`, one store)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "fhircare", "serve", "--port", str(port)),
            *("--data", str(data), "--server", server),
            *(("--workers", str(workers)) if workers != 1 else ()),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    base = f"http://127.0.0.1:{port}/fhir"
    wait_ready(f"{base}/metadata", 120, proc)
    return base, proc


def start_hapi() -> tuple[str, int]:
    """HAPI from `scripts/hapi` with the official image's JVM settings (`hapi_jvm`)."""
    port = free_port()
    script = str(ROOT / "scripts" / "hapi")
    subprocess.run([script, "start", str(port)], check=True, timeout=1800, env=hapi_jvm.env())
    return f"http://127.0.0.1:{port}/fhir", port


def hapi_pid(port: int) -> int | None:
    run_dir = Path(os.environ.get("HAPI_RUN_DIR", ROOT / "hapi-server" / "run"))
    pid_file = run_dir / f"hapi-{port}.pid"
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (all its threads) and of its live descendants
    (a server that serves from worker processes, as granian does), from /proc."""
    if pid is None or (own := _stat(pid)) is None:
        return None
    parents: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(entry.name)
    ticks, todo = 0, [str(pid)]
    while todo:
        current = todo.pop()
        fields = own if current == str(pid) else _stat(int(current))
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
        todo += parents.get(int(current), [])
    return ticks / os.sysconf("SC_CLK_TCK")


# ---- N concurrent clients ---------------------------------------------------------------------


def seed_patients(target: Target) -> list[str]:
    """2,000 Patients (5 per family name) in transactions of 500; their ids."""
    ids: list[str] = []
    total = SURNAMES * 5
    for start in range(0, total, 500):
        out = target.request("POST", "", 200, json=seed_bundle(start, min(500, total - start)))
        ids += [e["response"]["location"].split("/")[1] for e in out.json()["entry"]]
    return ids


def run_mixed(
    targets: list[Target],
    pids: dict[str, int | None],
    clients: list[int],
    duration: float,
    rounds: int,
    processes: int,
    seed: int,
    warmup: float,
) -> None:
    """The mixed workload at each client count, the targets taking turns round by round."""
    ids = {t.name: seed_patients(t) for t in targets}
    with ProcessPoolExecutor(processes) as pool:
        for t in targets:  # warm-up (JIT, caches, connection pools), not measured
            warm_up(pool, processes, t, max(clients), warmup, ids[t.name], seed)
        for n in clients:
            tallies = {t.name: Tally() for t in targets}
            cpu = {t.name: 0.0 for t in targets}
            for r in range(rounds):
                order = targets if r % 2 == 0 else list(reversed(targets))
                for t in order:
                    before = cpu_seconds(pids.get(t.name))
                    tally = run_load(pool, processes, t.base, n, duration, ids[t.name], seed + r)
                    after = cpu_seconds(pids.get(t.name))
                    if before is not None and after is not None:
                        cpu[t.name] += after - before
                    tallies[t.name].merge(tally)
                    tallies[t.name].elapsed = duration * (r + 1)
            report_mixed(f"mixed{n}", tallies, cpu, pids)


WARMUP_SLICE = 5.0  # seconds


def warm_up(
    pool: ProcessPoolExecutor,
    processes: int,
    target: Target,
    clients: int,
    seconds: float,
    ids: list[str],
    seed: int,
) -> None:
    """Unmeasured load for `seconds`, in slices of 5 s whose requests/s are printed: how long
    a server takes to settle (HAPI's JIT compiles its hot paths with C2 as they run)."""
    for i in range(max(1, round(seconds / WARMUP_SLICE))):
        tally = run_load(pool, processes, target.base, clients, WARMUP_SLICE, ids, seed + 50 + i)
        count = sum(len(v) for v in tally.latencies.values())
        at = f"{(i + 1) * WARMUP_SLICE:g}s"
        print(f"warmup{clients}_{target.name}_{at}_rps={count / tally.elapsed:.1f}")
        if tally.errors:
            print(f"warmup{clients}_{target.name}_{at}_errors={tally.errors}")
    sys.stdout.flush()


def report_mixed(
    name: str, tallies: dict[str, Tally], cpu: dict[str, float], pids: dict[str, int | None]
) -> None:
    figures: dict[str, dict[str, float]] = {}
    for who, tally in tallies.items():
        every = [v for values in tally.latencies.values() for v in values]
        count = len(every)
        rps = count / tally.elapsed
        figures[who] = {"rps": rps, "p50": statistics.median(every), "p99": p99(every)}
        print(f"{name}_{who}_requests={count}")
        print(f"{name}_{who}_rps={rps:.1f}")
        print(f"{name}_{who}_p50_ms={figures[who]['p50']:.2f}")
        print(f"{name}_{who}_p99_ms={figures[who]['p99']:.2f}")
        print(f"{name}_{who}_errors={tally.errors}")
        for kind, values in sorted(tally.latencies.items()):
            print(f"{name}_{who}_{kind}_p50_ms={statistics.median(values):.2f}")
            print(f"{name}_{who}_{kind}_p99_ms={p99(values):.2f}")
        if pids.get(who) is not None and count:
            print(f"{name}_{who}_server_cpu_ms_per_request={cpu[who] * 1000 / count:.2f}")
        # the generator's share of the machine: if it neared its cores, it was the limit
        print(f"{name}_{who}_loadgen_cpu_share={tally.cpu_seconds / tally.elapsed / CORES:.2f}")
        for problem in tally.first_errors:
            print(f"# {name} {who} error: {problem}")
    hapi = figures.get("hapi")
    for who, fc in figures.items():
        if hapi is None or who == "hapi":
            continue
        tag = "" if who == "fhircare" else f"_{who}"  # other servers, other worker counts
        print(f"{name}_ratio{tag}_rps={fc['rps'] / hapi['rps']:.2f}")
        print(f"{name}_ratio{tag}_p99={hapi['p99'] / fc['p99']:.2f}")
        print(f"{name}_ratio{tag}_p50={hapi['p50'] / fc['p50']:.2f}")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hapi", help="base URL of a running HAPI FHIR server (else one is started)")
    ap.add_argument("--fhircare", help="base URL of a running fhircare (else one is started)")
    ap.add_argument(
        "--servers",
        default="uvicorn",
        help="HTTP servers of the fhircare started, e.g. uvicorn,granian: one fhircare each "
        "(named fhircare, then fhircare_granian)",
    )
    ap.add_argument("--no-hapi", action="store_true", help="fhircare only (no ratios)")
    ap.add_argument(
        "--fhircare-workers",
        default="1",
        help="worker processes of the fhircare started (`serve --workers`, one store), e.g. "
        "2, or 1,2: one fhircare each, against the same HAPI (named fhircare_w1, fhircare_w2)",
    )
    ap.add_argument(
        "--rounds", type=int, help="turns each target takes per phase (4; 2 with --clients)"
    )
    ap.add_argument("--scale", type=float, default=1.0, help="requests per round multiplier")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--clients",
        help="concurrent clients, e.g. 32 or 32,64,128: the mixed workload instead",
    )
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per load run")
    ap.add_argument(
        "--client",
        choices=CLIENTS,
        default="httpx",
        help="the one-client mode's HTTP client: httpx (default) or lean (lean_http: one "
        "kept-alive connection, httptools; less client time inside the latencies)",
    )
    ap.add_argument("--processes", type=int, default=2, help="load generator processes (--clients)")
    ap.add_argument(
        "--warmup",
        type=float,
        help="unmeasured seconds per target: per phase (one client, default 20), "
        "or before the runs (--clients, default 240)",
    )
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")] if args.clients else []
    rounds = args.rounds or (2 if clients else 4)
    warmup = args.warmup if args.warmup is not None else (240.0 if clients else 20.0)

    started: list[Callable[[], None]] = []
    pids: dict[str, int | None] = {}
    bases: dict[str, str] = {}
    try:
        if args.fhircare:
            bases["fhircare"] = args.fhircare
        else:
            folder = tempfile.TemporaryDirectory(prefix="bench-api-")
            started.append(folder.cleanup)
            counts = [int(w) for w in args.fhircare_workers.split(",")]
            for i, server in enumerate(args.servers.split(",")):
                for workers in counts:
                    name = "fhircare" if i == 0 else f"fhircare_{server}"
                    if len(counts) > 1:
                        name += f"_w{workers}"
                    data = Path(folder.name) / f"data-{i}-{workers}"
                    bases[name], proc = start_fhircare(data, server, workers)
                    pids[name] = proc.pid  # its CPU counts the worker processes (descendants)
                    started.append(lambda proc=proc: (proc.terminate(), proc.wait(30)))
                    print(f"{name}_server={server}")
                    print(f"{name}_workers={workers}")
        hapi_base = args.hapi
        if not hapi_base and not args.no_hapi:
            hapi_base, port = start_hapi()
            pids["hapi"] = hapi_pid(port)
            print(f"hapi_java_opts={hapi_jvm.IMAGE_JAVA_OPTS or '(none)'}")
            for key, value in hapi_jvm.flags(pids["hapi"]).items():
                print(f"{key}={value}")
            script = str(ROOT / "scripts" / "hapi")
            started.append(lambda: subprocess.run([script, "stop", str(port)], check=False))
        if hapi_base and not args.no_hapi:
            bases["hapi"] = hapi_base  # last: the load runs take turns in this order
        kind = "httpx" if clients else args.client  # the seeding client with --clients
        targets = [
            Target(name, base.rstrip("/"), make_client(kind, 300.0)) for name, base in bases.items()
        ]
        print(f"client={kind}")
        print(f"rounds={rounds}")
        print(f"warmup_s={warmup:g}")
        if clients:
            print(f"duration_s={args.duration:g}")
            print(f"loadgen_processes={args.processes}")
            print(f"cores={CORES}")
            run_mixed(
                targets, pids, clients, args.duration, rounds, args.processes, args.seed, warmup
            )
            return
        print(f"scale={args.scale}")
        for phase in phases(args.scale):
            report(phase.name, run_phase(phase, targets, rounds, args.seed, warmup))
    finally:
        for stop in reversed(started):
            stop()


if __name__ == "__main__":
    main()
