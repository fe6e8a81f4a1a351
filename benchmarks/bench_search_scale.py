"""How the embedded store's searches, writes and memory grow with its size.

Prints `name=value` lines for each size (default 10,000, 50,000 and 100,000 resources: a
tenth Patients, the rest CarePlans and Observations): the median time of a patient-scoped
search (`Observation?patient=`), of a token search matching about 1% (`Observation?code=`)
and of a unique-identifier token search, each next to the same search with the store's
indexes switched off (a full scan of the type) measured in the same run; the median time of
one more create (validated, fsynced); and the resident memory per resource.

Run: `python benchmarks/bench_search_scale.py` (`--sizes 2000` for a smoke run;
`--packed Patient,CarePlan,Observation` holds those types as packed JSON bytes, as the store
holds AuditEvents: what that does to memory, searches and creates).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from fhircare.services.resources import ResourceService
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore

CODES = [f"{1000 + i}-{i % 10}" for i in range(100)]


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    import resource

    return pages * resource.getpagesize()


def docs(total: int, rng: random.Random) -> tuple[list[dict[str, Any]], list[str]]:
    n_pat = max(1, total // 10)
    pids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n_pat)]
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": "urn:bench:mrn", "value": f"mrn-{i}"}],
            "name": [{"family": f"Family{i}", "given": ["Pat"]}],
            "gender": "female" if i % 2 else "male",
            "birthDate": f"19{40 + i % 60}-01-01",
        }
        for i, pid in enumerate(pids)
    ]
    for i in range(total - n_pat):
        pid = pids[i % n_pat]
        if i % 3 == 0:
            out.append(
                {
                    "resourceType": "CarePlan",
                    "id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "status": "active",
                    "intent": "plan",
                    "subject": {"reference": f"Patient/{pid}"},
                    "category": [
                        {"coding": [{"system": "http://snomed.info/sct", "code": "734163000"}]}
                    ],
                }
            )
        else:
            out.append(
                {
                    "resourceType": "Observation",
                    "id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": rng.choice(CODES)}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "effectiveDateTime": f"2020-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00Z",
                    "valueQuantity": {
                        "value": i % 200,
                        "unit": "mmHg",
                        "system": "http://unitsofmeasure.org",
                        "code": "mm[Hg]",
                    },
                }
            )
    return out, pids


def median_ms(fn: Any, args: list[Any]) -> float:
    times = []
    for a in args:
        t = time.perf_counter()
        fn(a)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


class Unindexed:
    """The store with its index lookups switched off: every search scans the type."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store

    def __enter__(self) -> None:
        self.saved = (self.store.candidates, self.store.referrers)
        self.store.candidates = lambda *a: None  # type: ignore[method-assign]
        self.store.referrers = lambda rtype, key: set(self.store.live_ids(rtype))  # type: ignore

    def __exit__(self, *exc: object) -> None:
        self.store.candidates, self.store.referrers = self.saved  # type: ignore[method-assign]


def run(size: int, folder: Path, rng: random.Random, packed: frozenset[str] | None) -> None:
    options: dict[str, Any] = {} if packed is None else {"packed": packed}
    resources, pids = docs(size, rng)
    gc.collect()
    before = rss_bytes()
    store = EmbeddedStore(folder, fsync=False, **options)
    for i in range(0, len(resources), 1000):
        store.commit(
            [
                WriteOp("update", r["resourceType"], id=r["id"], resource=r)
                for r in resources[i : i + 1000]
            ]
        )
    del resources
    gc.collect()
    per_resource = (rss_bytes() - before) / size
    store.close()
    store = EmbeddedStore(folder, **options)  # fsynced writes from here on, as in `serve`
    svc = ResourceService(store)
    sample = rng.sample(pids, min(200, len(pids)))
    codes = [rng.choice(CODES) for _ in range(50)]
    mrns = [f"mrn-{rng.randrange(len(pids))}" for _ in range(200)]

    def patient_search(pid: str) -> None:
        store.search("Observation", [("patient", f"Patient/{pid}")])

    def token_search(code: str) -> None:
        store.search("Observation", [("code", f"http://loinc.org|{code}")])

    def mrn_search(mrn: str) -> None:
        assert len(store.search("Patient", [("identifier", f"urn:bench:mrn|{mrn}")])) == 1

    figures = {
        "patient_search": median_ms(patient_search, sample),
        "token_search_1pct": median_ms(token_search, codes),
        "identifier_search": median_ms(mrn_search, mrns),
    }
    with Unindexed(store):
        scans = {
            "patient_search": median_ms(patient_search, sample[:10]),
            "token_search_1pct": median_ms(token_search, codes[:5]),
            "identifier_search": median_ms(mrn_search, mrns[:10]),
        }

    def create(pid: str) -> None:
        svc.create(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": CODES[0]}]},
                "subject": {"reference": f"Patient/{pid}"},
            }
        )

    create_ms = median_ms(create, sample[:100])
    store.close()
    print(f"resources={size}")
    for name, value in figures.items():
        print(f"size_{size}_{name}_median_ms={value:.3f}")
        print(f"size_{size}_{name}_full_scan_median_ms={scans[name]:.3f}")
        print(f"size_{size}_{name}_ratio_full_scan_over_indexed={scans[name] / value:.1f}")
    print(f"size_{size}_create_fsynced_median_ms={create_ms:.3f}")
    print(f"size_{size}_memory_per_resource_bytes={per_resource:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,50000,100000")
    ap.add_argument("--packed", help="types to hold packed, comma-separated (default: the store's)")
    args = ap.parse_args()
    packed = None if args.packed is None else frozenset(args.packed.split(",")) | {"AuditEvent"}
    rng = random.Random(9)
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            run(size, Path(tmp) / f"s{size}", rng, packed)


if __name__ == "__main__":
    main()
