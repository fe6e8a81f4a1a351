"""How far above the floor of its own stack a fhircare read is, and whether a goal stated as a
ratio to HAPI is below that floor.

One client (httpx, as in `bench_api.py`) reads Patients from three servers, taking turns
round by round after a warm-up: `fhircare serve` (embedded store), a bare ASGI app on the
same uvicorn, loop and parser (`asgi_floor.py`: no routing, store, audit or logging) and,
unless `--no-hapi`, the project's HAPI FHIR server. Prints `name=value` lines: the median
and p99 of each, what fhircare adds over the floor, and the read median that 2x HAPI would
need next to the floor's.

    python benchmarks/bench_floor.py [--rounds 6 --per-round 300 --no-hapi]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import bench_api as api
import httpx

HERE = Path(__file__).resolve().parent


def start_floor() -> tuple[str, subprocess.Popen]:
    port = api.free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "asgi_floor:app",
            "--app-dir",
            str(HERE),
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    api.wait_ready(f"{base}/Patient/ready", 60, proc)
    return base, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round", type=int, default=300, help="reads per target per round")
    ap.add_argument("--warmup", type=float, default=20.0, help="unmeasured seconds per target")
    ap.add_argument("--no-hapi", action="store_true", help="fhircare and the floor only")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    stops = []
    try:
        folder = tempfile.TemporaryDirectory(prefix="bench-floor-")
        stops.append(folder.cleanup)
        fc_base, fc = api.start_fhircare(Path(folder.name) / "data")
        stops.append(lambda: (fc.terminate(), fc.wait(30)))
        floor_base, floor = start_floor()
        stops.append(lambda: (floor.terminate(), floor.wait(30)))
        bases = {"fhircare": fc_base, "floor": floor_base}
        if not args.no_hapi:
            hapi_base, port = api.start_hapi()
            script = str(api.ROOT / "scripts" / "hapi")
            stops.append(lambda: subprocess.run([script, "stop", str(port)], check=False))
            bases["hapi"] = hapi_base
        targets = [
            api.Target(n, b, httpx.Client(timeout=httpx.Timeout(60.0))) for n, b in bases.items()
        ]
        rng = random.Random(args.seed)
        for t in targets:
            if t.name == "floor":
                t.patients = [(f"p{i}", "") for i in range(2000)]
            else:
                t.patients = [(pid, "") for pid in api.seed_patients(t)]
        phase = api.Phase("read", api.reads, args.per_round)
        times = api.run_phase(phase, targets, args.rounds, rng.randrange(1 << 30), args.warmup)
        median = {name: statistics.median(v) for name, v in times.items()}
        print(f"read_requests={len(times['fhircare'])}")
        for name, values in times.items():
            print(f"read_{name}_median_ms={median[name]:.3f}")
            print(f"read_{name}_p99_ms={api.p99(values):.3f}")
        print(f"read_fhircare_over_floor_ms={median['fhircare'] - median['floor']:.3f}")
        if "hapi" in median:
            print(f"read_ratio_median={median['hapi'] / median['fhircare']:.2f}")
            print(f"read_2x_hapi_needs_ms={median['hapi'] / 2:.3f}")
            print(f"read_floor_ratio_median={median['hapi'] / median['floor']:.2f}")
    finally:
        for stop in reversed(stops):
            stop()


if __name__ == "__main__":
    main()
