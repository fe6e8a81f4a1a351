"""Medication reconciliation throughput: 20 pre-admission vs 20 discharge medications.

Prints `name=value` lines. Single core. Each figure is measured for at least --seconds.
- medrec_per_s (the goal figure): reconcile() on FRESH input resources every call (a pool of
  deep copies, each with its own resource ids and meta.versionId, built before timing), with
  the term caches warm (drug names, concepts, sig texts and dose quantities recur across
  patients). Nothing is reused from an earlier call except those term caches.
- medrec_warm_per_s: the same resource objects every call (every cache as warm as it gets).
- medrec_cold_per_s: fresh resources and every term cache cleared before each call.
- naive_per_s: a string-equality reconciliation (same text on both sides = continued) over the
  same inputs, measured in the same run; ratios = medrec / naive.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time
from collections.abc import Callable
from typing import Any

from fhircare.transitions import medications
from fhircare.transitions.medrec import reconcile

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
SCT = "http://snomed.info/sct"

# (pre-admission name, discharge name, pre sig, discharge sig)
PAIRS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
_NAMES = [
    ("Lisinopril 10 MG Oral Tablet", "Lisinopril 20 MG Oral Tablet"),
    ("Lasix 40mg", "Furosemide 40 MG Oral Tablet"),
    ("metoprolol succinate ER 50 mg", "Metoprolol Tartrate 25 MG Oral Tablet"),
    ("Atorvastatin 40 MG Oral Tablet", "Atorvastatin 40 MG Oral Tablet"),
    (
        "Metformin 500 MG Oral Tablet",
        "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet",
    ),
    ("Warfarin Sodium 5 MG Oral Tablet", "Coumadin 5 mg tablet"),
    ("Norco 5/325", "Acetaminophen 325 MG / HYDROcodone Bitartrate 5 MG Oral Tablet"),
    ("Amlodipine 5 MG Oral Tablet", "Amlodipine 10 MG Oral Tablet"),
    ("Omeprazole 20 mg capsule", "Pantoprazole 40 mg tablet"),
    ("Sertraline 50 mg tablet", "Zoloft 50 mg tablet"),
    ("Lantus 100 UNT/ML Injectable Solution", "insulin glargine 100 unt/ml pen"),
    ("Clopidogrel 75 MG Oral Tablet", "Plavix 75 mg tablet"),
    ("Digoxin 0.125 MG Oral Tablet", "Digoxin 0.125 MG Oral Tablet"),
    ("Hydrochlorothiazide 25 MG Oral Tablet", "Losartan 50 mg tablet"),
    ("Glipizide 5 mg tablet", "Glipizide 5 mg tablet"),
    ("Aspirin 81 mg tablet", "Aspirin 81 mg tablet"),
    ("Herbal supplement X", "Apixaban 5 mg tablet"),
    ("Simvastatin 20 MG Oral Tablet", "Simvastatin 20 MG Oral Tablet"),
    ("Ibuprofen 200 MG Oral Tablet", "Acetaminophen 500 MG Oral Tablet"),
    ("Spironolactone 25 mg tablet", "Spironolactone 25 mg tablet"),
]


def _sig(code: str, dose: float, unit: str, text: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "timing": {"code": {"coding": [{"code": code}]}},
        "doseAndRate": [{"doseQuantity": {"value": dose, "unit": unit}}],
        "route": {"coding": [{"system": SCT, "code": "26643006"}]},
    }
    if text:
        d["text"] = text
    return d


def make_inputs() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """20 MedicationStatements (home) + 20 discharge MedicationRequests + the Encounter."""
    resources: list[dict[str, Any]] = []
    for n, (pre, post) in enumerate(_NAMES):
        resources.append(
            {
                "resourceType": "MedicationStatement",
                "id": f"home{n}",
                "status": "active",
                "medicationCodeableConcept": {"text": pre},
                "subject": {"reference": "Patient/p"},
                "dosage": [_sig("QD", 1, "tablet", "1 tab po daily")],
            }
        )
        resources.append(
            {
                "resourceType": "MedicationRequest",
                "id": f"dis{n}",
                "status": "active",
                "intent": "order",
                "category": [{"coding": [{"code": "discharge"}]}],
                "medicationCodeableConcept": {"text": post},
                "subject": {"reference": "Patient/p"},
                "authoredOn": "2024-03-05T11:00:00+00:00",
                "dosageInstruction": [_sig("BID" if n % 4 == 0 else "QD", 1, "tablet")],
            }
        )
    encounter = {
        "resourceType": "Encounter",
        "id": "e",
        "status": "finished",
        "class": {"code": "IMP"},
        "period": {"start": "2024-03-01T10:00:00+00:00", "end": "2024-03-05T12:00:00+00:00"},
    }
    return resources, encounter


def naive(resources: list[dict[str, Any]], encounter: dict[str, Any]) -> dict[str, Any]:
    """Baseline: same medication text and same dosage text on both sides = continued."""

    def key(r: dict[str, Any]) -> str:
        return (r.get("medicationCodeableConcept") or {}).get("text", "").strip().lower()

    pre = {key(r): r for r in resources if r["resourceType"] == "MedicationStatement"}
    post = {key(r): r for r in resources if r["resourceType"] == "MedicationRequest"}
    items = []
    for k, r in pre.items():
        if k in post:
            same = r.get("dosage") == post[k].get("dosageInstruction")
            items.append({"status": "continued" if same else "changed", "ingredient": k})
        else:
            items.append({"status": "discontinued", "ingredient": k})
    items += [{"status": "new", "ingredient": k} for k in post if k not in pre]
    return {"encounter": f"Encounter/{encounter['id']}", "items": items, "issues": []}


def fresh_pool(
    resources: list[dict[str, Any]], encounter: dict[str, Any], size: int = 64
) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """`size` deep copies of the inputs, each with its own resource ids and versionIds."""
    pool = []
    for k in range(size):
        rs = copy.deepcopy(resources)
        for r in rs:
            r["id"] = f"{r['id']}-{k}"
            r["meta"] = {"versionId": str(k + 1)}
        enc = copy.deepcopy(encounter)
        enc["id"] = f"{enc['id']}-{k}"
        pool.append((rs, enc))
    return pool


def measure(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of fn over at least `seconds`."""
    fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        n += 50
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    resources, encounter = make_inputs()
    medications.load_tables()
    result = reconcile(resources, encounter)
    pool = itertools.cycle(fresh_pool(resources, encounter))

    def fresh() -> None:
        reconcile(*next(pool))

    def cold() -> None:
        medications.clear_caches()
        reconcile(*next(pool))

    fresh_rate = measure(fresh, args.seconds)
    warm_rate = measure(lambda: reconcile(resources, encounter), args.seconds)
    cold_rate = measure(cold, args.seconds)
    naive_rate = measure(lambda: naive(resources, encounter), args.seconds)
    print("meds_pre=20")
    print("meds_discharge=20")
    print(f"items={len(result.items)}")
    print(f"issues={len(result.issues)}")
    print(f"medrec_per_s={fresh_rate:.0f}")
    print(f"medrec_warm_per_s={warm_rate:.0f}")
    print(f"medrec_cold_per_s={cold_rate:.0f}")
    print(f"naive_per_s={naive_rate:.0f}")
    print(f"ratio_medrec_to_naive={fresh_rate / naive_rate:.4f}")
    print(f"ratio_medrec_cold_to_naive={cold_rate / naive_rate:.4f}")
    print(f"goal_per_s=5000 goal_met={'yes' if fresh_rate >= 5000 else 'no'}")


if __name__ == "__main__":
    main()
