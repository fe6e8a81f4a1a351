"""Panel-wide case finding: the Spark path against the per-patient Python path, same run.

For each panel size (generated, seed 1) it runs, each in its own process:
- spark: `fhircare population stratify --source DIR` (JVM start, ingest, facts, decide),
  local[2] unless --spark-master;
- python: the per-patient path of `/care/eligibility` (`assess_eligibility` on every
  patient of an embedded store holding the panel); loading the store is timed apart.
Wall time, patients/s and peak RSS (the whole process tree: the JVM included) are printed as
`name=value` lines, with the growth per 10x patients and the machine's load (`uptime`).

    python benchmarks/bench_population.py --sizes 1000,10000 [--class-archive cold]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import psutil

AS_OF = date(2025, 3, 1)
NOW = "2025-03-01T12:00:00Z"


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes of the process tree, stdout) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    ps = psutil.Process(proc.pid)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak[0] = max(peak[0], _tree_rss(ps))
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    watcher.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {out[-500:]}")
    return wall, peak[0], out


def python_path(folder: Path, store_dir: Path) -> None:
    """Child mode: load the panel into an embedded store, assess every patient."""
    from fhircare.care.eligibility import assess_eligibility
    from fhircare.fhir.datetimes import parse_datetime
    from fhircare.population.generate import TYPES
    from fhircare.store.base import WriteOp
    from fhircare.store.embedded import EmbeddedStore

    store = EmbeddedStore(store_dir, fsync=False, referential_integrity=False)
    start = time.perf_counter()
    patients: list[str] = []
    for rtype in TYPES:
        batch: list[WriteOp] = []
        with (folder / f"{rtype}.ndjson").open() as fh:
            for line in fh:
                r = json.loads(line)
                if rtype == "Patient":
                    patients.append(f"Patient/{r['id']}")
                batch.append(WriteOp("update", rtype, id=r["id"], resource=r, handed_over=True))
                if len(batch) >= 2000:
                    store.commit(batch)
                    batch = []
        if batch:
            store.commit(batch)
    loaded = time.perf_counter() - start
    now = parse_datetime(NOW)
    start = time.perf_counter()
    tiers: dict[str, int] = {}
    for ref in patients:
        tier = assess_eligibility(store, ref, now=now).tier
        tiers[tier] = tiers.get(tier, 0) + 1
    assessed = time.perf_counter() - start
    store.close()
    print(json.dumps({"load": loaded, "assess": assessed, "tiers": tiers}))


def _stratify(folder: Path, out: Path, master: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fhircare",
        "population",
        "stratify",
        "--source",
        str(folder),
        "--out",
        str(out),
        "--now",
        NOW,
        "--spark-master",
        master,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument(
        "--no-python-above",
        type=int,
        default=10**9,
        help="skip the per-patient path above this many patients",
    )
    parser.add_argument(
        "--class-archive",
        choices=("warm", "cold"),
        default="warm",
        help="Spark runs with the JVM's class-data archive made beforehand (warm), or each "
        "in an empty cache folder, recording it (cold: a first run)",
    )
    parser.add_argument("--python-path", nargs=2, metavar=("DIR", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.python_path:
        python_path(Path(args.python_path[0]), Path(args.python_path[1]))
        return
    from fhircare.population.generate import generate

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load_before={os.getloadavg()[0]:.2f}")
    print(
        f"uptime_before={subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}"
    )
    figures: dict[str, dict[int, float]] = {"spark_s": {}, "python_s": {}}
    print(f"class_archive={args.class_archive}")
    with tempfile.TemporaryDirectory(prefix="bench-population-") as tmp:
        cache = Path(tmp) / "cache"
        if args.class_archive == "warm":  # one small run (not counted) records the archive
            generate(Path(tmp) / "panel-warm", 50, seed=2, as_of=AS_OF)
            warm = _stratify(Path(tmp) / "panel-warm", Path(tmp) / "run-warm", args.spark_master)
            measured(warm, {**os.environ, "XDG_CACHE_HOME": str(cache)})
        for n in sizes:
            folder = Path(tmp) / f"panel-{n}"
            start = time.perf_counter()
            panel = generate(folder, n, seed=1, as_of=AS_OF)
            print(f"generate_{n}_s={time.perf_counter() - start:.1f}")
            print(f"resources_{n}={sum(panel.counts.values())}")
            if args.class_archive == "cold":
                cache = Path(tmp) / f"cache-{n}"
            cmd = _stratify(folder, Path(tmp) / f"run-{n}", args.spark_master)
            wall, rss, out = measured(cmd, {**os.environ, "XDG_CACHE_HOME": str(cache)})
            figures["spark_s"][n] = wall
            for line in out.splitlines():  # "stages: ingest 9.1 s, facts 8.2 s, decide 0.2 s"
                if line.startswith("stages: "):
                    staged = 0.0
                    for part in line.removeprefix("stages: ").split(", "):
                        stage, seconds, _ = part.rsplit(" ", 2)
                        staged += float(seconds)
                        print(f"spark_{n}_{stage.replace('-', '_')}_s={float(seconds):.1f}")
                    # the rest: interpreter and JVM start, session, reading the options
                    print(f"spark_{n}_start_and_rest_s={wall - staged:.1f}")
            print(f"spark_{n}_s={wall:.1f}")
            print(f"spark_{n}_patients_per_s={n / wall:.0f}")
            print(f"spark_{n}_peak_rss_mb={rss / 2**20:.0f}")
            if n <= args.no_python_above:
                cmd = [
                    sys.executable,
                    __file__,
                    "--python-path",
                    str(folder),
                    str(Path(tmp) / f"store-{n}"),
                ]
                wall, rss, out = measured(cmd)
                child = json.loads(out.strip().splitlines()[-1])
                figures["python_s"][n] = child["assess"]
                print(f"python_{n}_load_store_s={child['load']:.1f}")
                print(f"python_{n}_s={child['assess']:.1f}")
                print(f"python_{n}_patients_per_s={n / child['assess']:.0f}")
                print(f"python_{n}_peak_rss_mb={rss / 2**20:.0f}")
                print(f"spark_speedup_{n}={child['assess'] / figures['spark_s'][n]:.2f}")
            print(f"load_after_{n}={os.getloadavg()[0]:.2f}")
    for name, by_size in figures.items():
        ordered = sorted(by_size)
        for a, b in zip(ordered, ordered[1:], strict=False):
            if b == a * 10:
                print(f"{name.removesuffix('_s')}_growth_{a}_to_{b}={by_size[b] / by_size[a]:.2f}")
    print(
        f"uptime_after={subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}"
    )


if __name__ == "__main__":
    main()
