"""Medication reconciliation accuracy on the project's labelled discharges.

Prints `name=value` lines: status accuracy, issue precision and recall, matched-medication
and discrepancy precision and recall, and the unsafe count (defined in
tests/medrec_labelled/score.py), for fhircare and, in the same run, for a string-equality
baseline (same name text on both lists = the same drug; same sig text = continued).

For context, not comparison: Li Q, Spooner SA, Kaiser M, et al. An end-to-end hybrid
algorithm for automated medication discrepancy detection. BMC Med Inform Decis Mak
2015;15:37 (doi:10.1186/s12911-015-0160-8) report 92.4/90.7 % precision/recall on matched
medications and 71.5/65.2 % on discrepant medications, end to end, on 271 paediatric
complex-care patients whose home medications came from free-text notes. This set is
different: 50-odd adult discharges written for fhircare, with both lists already
structured, labelled by the people who wrote the rules. The figures are printed next to
each other only to place them; they do not rank the two methods.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhircare.transitions.medications import parse_name  # noqa: E402
from fhircare.transitions.medrec import (  # noqa: E402
    CHANGED,
    CONTINUED,
    DISCONTINUED,
    NEW,
    RecItem,
    ReconciliationResult,
)
from tests.medrec_labelled.score import figures, load_cases, resources, score  # noqa: E402

LI_2015 = {
    "matched_precision_pct": "92.4",
    "matched_recall_pct": "90.7",
    "discrepancy_precision_pct": "71.5",
    "discrepancy_recall_pct": "65.2",
}


def naive(case: dict[str, Any]) -> ReconciliationResult:
    """Baseline: the same name text on both lists is the same drug; the same sig text is
    continued; no issues. Items are named as fhircare names them (so only the matching and
    the comparison differ)."""

    def name(r: dict[str, Any]) -> str:
        return " ".join(((r.get("medicationCodeableConcept") or {}).get("text") or "").split())

    def sig(r: dict[str, Any]) -> str:
        return " ".join(
            d.get("text", "") for d in r.get("dosage") or r.get("dosageInstruction") or ()
        )

    rs = resources(case)
    pre = {name(r): r for r in rs if r["resourceType"] == "MedicationStatement"}
    post = {name(r): r for r in rs if r["resourceType"] == "MedicationRequest"}

    def label(text: str) -> str:
        return " / ".join(parse_name(text).ingredients) or text

    items = []
    for k, r in pre.items():
        if k in post:
            status = CONTINUED if sig(r) == sig(post[k]) else CHANGED
            items.append(RecItem(status, label(k), None, r["id"], post[k]["id"]))
        else:
            items.append(RecItem(DISCONTINUED, label(k), None, r["id"], None))
    items += [RecItem(NEW, label(k), None, None, r["id"]) for k, r in post.items() if k not in pre]
    return ReconciliationResult("Encounter/stay", items, [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--errors", action="store_true", help="also list every disagreement")
    args = ap.parse_args()
    cases = load_cases()
    ours = score(cases)
    base = score(cases, naive)
    for key, value in figures(ours).items():
        print(f"{key}={value}")
    for key, value in figures(base).items():
        if key not in ("cases", "items"):
            print(f"naive_{key}={value}")
    for key, value in LI_2015.items():
        print(f"li2015_{key}={value}")
    if args.errors:
        for line in ours.errors + [f"UNSAFE {u}" for u in ours.unsafe]:
            print(f"# {line}")


if __name__ == "__main__":
    main()
