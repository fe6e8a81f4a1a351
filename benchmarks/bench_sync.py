"""Sync throughput against a real HAPI FHIR server, measured side by side in one run.

Push of N resources (1 Patient : 4 Observations):
* `raw`: the ceiling, plain httpx POSTing the same transaction Bundles, no bookkeeping;
* `fhircare`: `sync.push` from an embedded store (change log, ordering, watermarks);
* `naive`: one PUT request per resource.
Pull of the same N resources: `fhircare` (`sync.pull` into a fresh embedded store), `raw`
(httpx following the same search pages), `naive` (one GET per resource).

Each variant writes its own fresh resources (distinct ids and tag), so all push variants
do the same work: creates. Prints `name=value` lines.

    python benchmarks/bench_sync.py --base http://127.0.0.1:8090/fhir [--n 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from typing import Any

import httpx

from fhircare.remote.client import FhirClient
from fhircare.remote.sync import pull, push
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore

TAG = "http://fhircare.org/fhir/CodeSystem/bench-run"
HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def dataset(tag: str, n: int) -> list[dict[str, Any]]:
    """n resources: Patients first, then 4 Observations per Patient."""
    meta = {"tag": [{"system": TAG, "code": tag}]}
    patients = [
        {
            "resourceType": "Patient",
            "id": f"{tag}-p{i}",
            "meta": meta,
            "name": [{"family": f"Bench{i}", "given": ["Sync"]}],
            "gender": "female" if i % 2 else "male",
            "birthDate": "1960-04-12",
        }
        for i in range(n // 5)
    ]
    observations = [
        {
            "resourceType": "Observation",
            "id": f"{tag}-o{i}",
            "meta": meta,
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": f"Patient/{tag}-p{i % len(patients)}"},
            "effectiveDateTime": "2024-03-01T10:00:00Z",
            "valueQuantity": {
                "value": 70 + i % 20,
                "unit": "kg",
                "system": "http://unitsofmeasure.org",
                "code": "kg",
            },
        }
        for i in range(n - len(patients))
    ]
    return patients + observations


def bundles(resources: list[dict[str, Any]], batch: int) -> list[dict[str, Any]]:
    out = []
    for start in range(0, len(resources), batch):
        entries = [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources[start : start + batch]
        ]
        out.append({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    return out


def push_raw(http: httpx.Client, base: str, resources: list[dict[str, Any]], batch: int) -> float:
    t0 = time.perf_counter()
    for bundle in bundles(resources, batch):
        r = http.post(
            base, content=json.dumps(bundle), headers={**HEADERS, "Prefer": "return=minimal"}
        )
        r.raise_for_status()
        r.json()
    return time.perf_counter() - t0


def push_naive(http: httpx.Client, base: str, resources: list[dict[str, Any]]) -> float:
    t0 = time.perf_counter()
    for r in resources:
        resp = http.put(
            f"{base}/{r['resourceType']}/{r['id']}", content=json.dumps(r), headers=HEADERS
        )
        resp.raise_for_status()
    return time.perf_counter() - t0


def push_fhircare(
    client: FhirClient, folder: str, resources: list[dict[str, Any]], batch: int
) -> tuple[float, float, EmbeddedStore]:
    store = EmbeddedStore(folder)
    t0 = time.perf_counter()
    for start in range(0, len(resources), 500):
        store.commit(
            [
                WriteOp("update", r["resourceType"], id=r["id"], resource=r)
                for r in resources[start : start + 500]
            ]
        )
    local = time.perf_counter() - t0
    report = push(store, client, batch_size=batch)
    assert report.pushed == len(resources), report
    return report.seconds, local, store


def pull_raw(http: httpx.Client, base: str, tag: str, count: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    got = 0
    for rtype in ("Patient", "Observation"):
        url: str | None = f"{base}/{rtype}"
        params: dict[str, str] | None = {
            "_tag": f"{TAG}|{tag}",
            "_sort": "_lastUpdated",
            "_count": str(count),
        }
        while url:
            body = http.get(url, params=params, headers=HEADERS).raise_for_status().json()
            got += len(body.get("entry") or [])
            url = next((lk["url"] for lk in body.get("link", []) if lk["relation"] == "next"), None)
            params = None
    return time.perf_counter() - t0, got


def pull_naive(http: httpx.Client, base: str, resources: list[dict[str, Any]]) -> float:
    t0 = time.perf_counter()
    for r in resources:
        http.get(f"{base}/{r['resourceType']}/{r['id']}", headers=HEADERS).raise_for_status()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--base", default=os.environ.get("FHIRCARE_BENCH_HAPI_URL", "http://127.0.0.1:8090/fhir")
    )
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--count", type=int, default=50, help="_count for pulls (HAPI caps at 50)")
    args = ap.parse_args()
    base = args.base.rstrip("/")
    run = uuid.uuid4().hex[:8]
    timeout = httpx.Timeout(300.0, connect=5.0)
    with (
        httpx.Client(timeout=timeout) as http,
        FhirClient(base, timeout=timeout) as client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        # warm-up (JIT, caches, connections): not measured
        push_raw(http, base, dataset(f"{run}w", 500), args.batch)

        # HAPI slows down as its database grows, so the three ways take turns in rounds
        # (the order rotating each round) instead of one after the other.
        rounds = 5
        per = args.n // rounds
        raw_s = sync_s = local_s = naive_s = 0.0
        for r in range(rounds):
            ways = ["raw", "fhircare", "naive"]
            ways = ways[r % 3 :] + ways[: r % 3]
            for way in ways:
                if way == "raw":
                    raw_s += push_raw(http, base, dataset(f"{run}r{r}", per), args.batch)
                elif way == "naive":
                    naive_s += push_naive(http, base, dataset(f"{run}n{r}", per))
                else:
                    s_, l_, store = push_fhircare(
                        client, f"{tmp}/push{r}", dataset(f"{run}f{r}", per), args.batch
                    )
                    store.close()
                    sync_s += s_
                    local_s += l_
        args.n = per * rounds
        n = args.n
        print(f"push_resources={n}")
        print(f"push_raw_per_s={n / raw_s:.1f}")
        print(f"push_fhircare_per_s={n / sync_s:.1f}")
        print(f"push_naive_per_s={n / naive_s:.1f}")
        print(f"push_fhircare_vs_raw={raw_s / sync_s:.3f}")
        print(f"push_fhircare_vs_naive={naive_s / sync_s:.2f}")
        print(f"push_local_commit_per_s={n / local_s:.1f}")

        push_raw(http, base, dataset(f"{run}p", n), args.batch)  # what is pulled (not timed)
        raw_pull_s, got = pull_raw(http, base, f"{run}p", args.count)
        assert got == n, got
        pulled = EmbeddedStore(f"{tmp}/pull")
        report = pull(
            pulled,
            client,
            types=["Patient", "Observation"],
            count=args.count,
            where=[("_tag", f"{TAG}|{run}p")],
        )
        assert report.created == n, report
        pulled.close()
        naive_pull_s = pull_naive(http, base, dataset(f"{run}p", n))
        print(f"pull_resources={n}")
        print(f"pull_raw_per_s={n / raw_pull_s:.1f}")
        print(f"pull_fhircare_per_s={n / report.seconds:.1f}")
        print(f"pull_naive_per_s={n / naive_pull_s:.1f}")
        print(f"pull_fhircare_vs_raw={raw_pull_s / report.seconds:.3f}")
        print(f"pull_fhircare_vs_naive={naive_pull_s / report.seconds:.2f}")


if __name__ == "__main__":
    main()
