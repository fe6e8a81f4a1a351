"""Embedded store benchmark at 10,000 resources, against plain TinyDB (default JSON storage).

Prints `name=value` lines. Run: `python benchmarks/bench_store.py` (add --quick for a smoke run).
The fhircare side goes through the same service the API uses (validation, reference checks,
durable fsynced commit); the baseline is TinyDB's out-of-the-box JSONStorage doing the same
logical operations with no validation.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB

from fhircare.services.bundles import BundleProcessor
from fhircare.services.resources import ResourceService
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore


def patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:bench", "value": str(i)}],
        "name": [{"family": f"Family{i}", "given": ["Pat"]}],
        "gender": "female",
        "birthDate": "1950-01-01",
    }


def careplan(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{pid}"},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/us/core/CodeSystem/careplan-category",
                        "code": "assess-plan",
                    }
                ]
            }
        ],
        "description": "Diabetes care plan with HbA1c goal",
    }


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def timed(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def seed(total: int) -> tuple[list[dict[str, Any]], list[str]]:
    """`total` resources: a tenth Patients, the rest CarePlans spread over them."""
    n_pat = total // 10
    pids = [str(uuid.uuid4()) for _ in range(n_pat)]
    docs = [{**patient(i), "id": pid} for i, pid in enumerate(pids)]
    docs += [{**careplan(pids[i % n_pat]), "id": str(uuid.uuid4())} for i in range(total - n_pat)]
    return docs, pids


def bench_fhircare(folder: Path, docs: list[dict[str, Any]], pids: list[str], n: int) -> dict:
    store = EmbeddedStore(folder)
    for i in range(0, len(docs), 1000):
        store.commit(
            [
                WriteOp("update", d["resourceType"], id=d["id"], resource=d)
                for d in docs[i : i + 1000]
            ]
        )
    svc = ResourceService(store)
    counter = iter(range(10**9))
    create = timed(lambda: svc.create(careplan(pids[next(counter) % len(pids)])), n)
    read = timed(lambda: store.read("Patient", pids[next(counter) % len(pids)]), n)
    search = timed(
        lambda: store.search(
            "CarePlan", [("patient", f"Patient/{pids[next(counter) % len(pids)]}")]
        ),
        50,
    )
    bp = BundleProcessor(svc, base_url="http://bench/fhir")
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": careplan(pids[i % len(pids)]),
                "request": {"method": "POST", "url": "CarePlan"},
            }
            for i in range(1000)
        ],
    }
    t = time.perf_counter()
    bp.process(tx)
    tx_ms = (time.perf_counter() - t) * 1000
    store.close()
    return {"create": create, "read": read, "search": search, "tx": tx_ms}


def bench_tinydb(path: Path, docs: list[dict[str, Any]], pids: list[str], n: int) -> dict:
    db = TinyDB(path)  # default JSONStorage: the whole file rewritten on every write
    by_type: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_type.setdefault(d["resourceType"], []).append(d)
    for rtype, items in by_type.items():
        db.table(rtype).insert_multiple(items)
    q = Query()
    counter = iter(range(10**9))
    plans = db.table("CarePlan")
    pats = db.table("Patient")
    create = timed(lambda: plans.insert(careplan(pids[next(counter) % len(pids)])), n)
    read = timed(lambda: pats.get(q.id == pids[next(counter) % len(pids)]), n)
    # a different patient each time: TinyDB caches the result of a repeated query
    search = timed(
        lambda: plans.search(q.subject.reference == f"Patient/{pids[next(counter) % len(pids)]}"),
        50,
    )
    t = time.perf_counter()
    plans.insert_multiple([careplan(pids[i % len(pids)]) for i in range(1000)])
    tx_ms = (time.perf_counter() - t) * 1000
    db.close()
    return {"create": create, "read": read, "search": search, "tx": tx_ms}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resources", type=int, default=10_000)
    ap.add_argument("--ops", type=int, default=300)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.resources, args.ops = 2000, 50
    docs, pids = seed(args.resources)
    with tempfile.TemporaryDirectory() as tmp:
        ours = bench_fhircare(Path(tmp) / "fhircare", docs, pids, args.ops)
        base = bench_tinydb(Path(tmp) / "tinydb.json", docs, pids, args.ops)
    print(f"resources={args.resources}")
    for name, key in (
        ("create", "create"),
        ("read", "read"),
        ("search_patient_careplans", "search"),
    ):
        for label, res in (("fhircare", ours), ("tinydb_default", base)):
            print(f"{label}_{name}_median_ms={statistics.median(res[key]):.3f}")
            print(f"{label}_{name}_p99_ms={pct(res[key], 0.99):.3f}")
        print(
            f"ratio_{name}_median_tinydb_over_fhircare="
            f"{statistics.median(base[key]) / statistics.median(ours[key]):.2f}"
        )
    print(f"fhircare_transaction_1000_ms={ours['tx']:.1f}")
    print(f"tinydb_default_insert_multiple_1000_ms={base['tx']:.1f}")
    print(f"ratio_transaction_tinydb_over_fhircare={base['tx'] / ours['tx']:.2f}")
    print(f"target_create_p99_under_20ms={'yes' if pct(ours['create'], 0.99) < 20 else 'no'}")
    print(f"target_transaction_under_1s={'yes' if ours['tx'] < 1000 else 'no'}")


if __name__ == "__main__":
    main()
