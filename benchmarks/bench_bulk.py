"""Bulk Data export: the same panel exported by `fhircare serve` and by HAPI FHIR (the
`recommended` profile of hapi-server/), pulled with `pull_export` in one run; and the read
latency of fhircare while one of its exports runs, against the same reads when idle.

    python benchmarks/bench_bulk.py --patients 2000 [--hapi URL]   # HAPI: started if absent

A HAPI it starts runs with the official image's JVM settings (`hapi_jvm.py`).

Prints `name=value` lines: export seconds and resources/s per server, the HAPI/fhircare
ratio of the export times (above 1: fhircare is faster), and p50/p99 of
`GET /fhir/Patient/{id}` idle and during an export (their ratio: 1 means the export does
not hold up requests).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hapi_jvm
import httpx

from fhircare.population.bulk_pull import pull_export

ROOT = Path(__file__).resolve().parents[1]
FHIR = {"Content-Type": "application/fhir+json"}
LOINC, SNOMED = "http://loinc.org", "http://snomed.info/sct"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def patient_records(i: int) -> list[dict]:
    pid = f"bb{i}"
    subject = {"reference": f"Patient/{pid}"}
    return [
        {"resourceType": "Patient", "id": pid, "name": [{"family": f"Bulk{i}"}]},
        {
            "resourceType": "Condition",
            "id": f"{pid}-c",
            "code": {"coding": [{"system": SNOMED, "code": "44054006"}]},
            "subject": subject,
        },
        {
            "resourceType": "Observation",
            "id": f"{pid}-o",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "4548-4"}]},
            "subject": subject,
            "valueQuantity": {"value": 7, "unit": "%", "system": "http://unitsofmeasure.org"},
        },
        {
            "resourceType": "Encounter",
            "id": f"{pid}-e",
            "status": "planned",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "AMB",
            },
            "subject": subject,
        },
    ]


def load(base: str, patients: int, batch: int = 250) -> int:
    total = 0
    with httpx.Client(timeout=300) as http:
        for start in range(0, patients, batch):
            resources = [r for i in range(start, min(patients, start + batch))
                         for r in patient_records(i)]  # fmt: skip
            entries = [
                {
                    "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for r in resources
            ]
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            http.post(base, json=bundle, headers=FHIR).raise_for_status()
            total += len(resources)
    return total


def export_seconds(base: str, out: Path) -> tuple[float, int]:
    start = time.perf_counter()
    paths = pull_export(
        base, out, types=["Patient", "Condition", "Observation", "Encounter"], max_poll_interval=0.5
    )
    elapsed = time.perf_counter() - start
    return elapsed, sum(1 for p in paths for _ in p.open("rb"))


def read_latencies(base: str, n: int, stop: threading.Event | None = None) -> list[float]:
    out = []
    with httpx.Client(timeout=60) as http:
        for i in range(n):
            if stop is not None and stop.is_set() and len(out) >= 20:
                break
            t = time.perf_counter()
            http.get(f"{base}/Patient/bb{i % 100}").raise_for_status()
            out.append(time.perf_counter() - t)
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 2 else max(values)


@contextmanager
def fhircare_server(data: Path) -> Iterator[str]:
    port = free_port()
    log = (data.parent / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhircare", "serve", "--port", str(port), "--data", str(data)],
        env={**os.environ, "FHIRCARE_BULK_RETRY_AFTER": "1"},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def hapi_server(url: str | None) -> Iterator[str]:
    if url:
        yield url.rstrip("/")
        return
    port = free_port()
    script = ROOT / "scripts" / "hapi"
    subprocess.run(
        [str(script), "start", str(port), "recommended"],
        check=True,
        capture_output=True,
        env=hapi_jvm.env(),  # the official image's JVM settings
    )
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        subprocess.run([str(script), "stop", str(port)], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--hapi", help="a running HAPI base URL with $export (recommended profile)")
    ap.add_argument("--no-hapi", action="store_true", help="fhircare only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with fhircare_server(root / "data") as base:
            n = load(base, args.patients)
            print(f"resources={n}")
            idle = read_latencies(base, 300)
            secs, count = export_seconds(base, root / "fc")
            assert count == n, (count, n)
            print(f"fhircare_export_s={secs:.2f}")
            print(f"fhircare_export_resources_per_s={count / secs:.0f}")
            stop = threading.Event()
            during: list[float] = []
            reader = threading.Thread(
                target=lambda: during.extend(read_latencies(base, 100_000, stop))
            )
            reader.start()
            export_seconds(base, root / "fc2")
            stop.set()
            reader.join()
            print(f"fhircare_read_idle_p50_ms={pct(idle, 50) * 1000:.1f}")
            print(f"fhircare_read_idle_p99_ms={pct(idle, 99) * 1000:.1f}")
            print(f"fhircare_read_during_export_p50_ms={pct(during, 50) * 1000:.1f}")
            print(f"fhircare_read_during_export_p99_ms={pct(during, 99) * 1000:.1f}")
            print(f"fhircare_read_during_export_reads={len(during)}")
        if args.no_hapi:
            return
        with hapi_server(args.hapi) as hapi:
            load(hapi, args.patients)
            hsecs, hcount = export_seconds(hapi, root / "hapi")
            print(f"hapi_export_s={hsecs:.2f}")
            print(f"hapi_export_resources_per_s={hcount / hsecs:.0f}")
            print(f"hapi_over_fhircare_export_time={hsecs / secs:.2f}")


if __name__ == "__main__":
    main()
