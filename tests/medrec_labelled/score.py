"""Score reconciliation against the labelled set (cases.yaml).

Figures:
- status accuracy: labelled items whose status fhircare gives (by item name);
- issue precision / recall: issues matched on type and the set of medications they name;
- matched medications precision / recall: pairs fhircare makes (continued or changed) against
  the labelled pairs; discrepancy precision / recall: items fhircare calls changed, new or
  discontinued against the labelled ones (the two measures of Li et al. 2015);
- unsafe: results that would let a problem through unseen: (1) a labelled change, start,
  stop or issue on an item that fhircare calls continued with no issue on it; (2) a labelled
  omission, high-risk change, interaction or duplicate with no issue naming its medications;
  (3) a pairing of medications the label keeps apart (labelled new or discontinued, paired).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fhircare.transitions.medrec import ReconciliationResult, reconcile

CASES = Path(__file__).with_name("cases.yaml")
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "stay",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
    "subject": {"reference": "Patient/p"},
    "period": {"start": "2025-03-01T10:00:00+00:00", "end": "2025-03-05T12:00:00+00:00"},
}
HARM_TYPES = frozenset({"omission", "high-risk", "interaction", "duplicate-therapy"})


def load_cases(path: Path = CASES) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _concept(entry: dict[str, Any]) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if entry.get("drug"):
        concept["text"] = entry["drug"]
    if entry.get("code"):
        concept["coding"] = [{"system": RXNORM, "code": str(entry["code"])}]
    return concept


def _dosage(entry: dict[str, Any]) -> list[dict[str, Any]]:
    if "dosage" in entry:
        return entry["dosage"]
    return [{"text": entry["sig"]}] if entry.get("sig") else []


def resources(case: dict[str, Any]) -> list[dict[str, Any]]:
    """The case as FHIR: MedicationStatements before, discharge MedicationRequests after."""
    out: list[dict[str, Any]] = []
    for n, e in enumerate(case.get("pre") or ()):
        ms: dict[str, Any] = {
            "resourceType": "MedicationStatement",
            "id": f"pre{n}",
            "status": e.get("status", "active"),
            "medicationCodeableConcept": _concept(e),
            "subject": {"reference": "Patient/p"},
        }
        if _dosage(e):
            ms["dosage"] = _dosage(e)
        out.append(ms)
    for n, e in enumerate(case.get("post") or ()):
        mr: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "id": f"post{n}",
            "status": e.get("status", "active"),
            "intent": "order",
            "category": [{"coding": [{"system": CATEGORY, "code": "discharge"}]}],
            "medicationCodeableConcept": _concept(e),
            "subject": {"reference": "Patient/p"},
            "authoredOn": "2025-03-05T11:00:00+00:00",
        }
        if _dosage(e):
            mr["dosageInstruction"] = _dosage(e)
        if e.get("reason"):
            mr["statusReason"] = {"text": e["reason"]}
        out.append(mr)
    return out


def run_case(case: dict[str, Any]) -> ReconciliationResult:
    return reconcile(resources(case), ENCOUNTER)


@dataclass
class Scores:
    cases: int = 0
    items: int = 0
    statuses_right: int = 0
    issues_expected: int = 0
    issues_found: int = 0
    issues_matched: int = 0
    pairs_expected: int = 0
    pairs_found: int = 0
    pairs_right: int = 0
    discrepant_expected: int = 0
    discrepant_found: int = 0
    discrepant_right: int = 0
    unsafe: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @staticmethod
    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None


def _named(result: ReconciliationResult, issue_items: Iterable[int]) -> frozenset[str]:
    return frozenset(result.items[i].ingredient for i in issue_items)


def score(
    cases: list[dict[str, Any]],
    run: Callable[[dict[str, Any]], ReconciliationResult] = run_case,
) -> Scores:
    """Score `run` (fhircare's reconcile by default) on the cases."""
    s = Scores()
    for case in cases:
        s.cases += 1
        cid = case["id"]
        result = run(case)
        expect = case["expect"]
        want_items: dict[str, str] = expect.get("items") or {}
        got_items = {i.ingredient: i for i in result.items}
        got_issues = [(i.type, _named(result, i.items)) for i in result.issues]
        flagged = {name for _, names in got_issues for name in names}
        want_issues = [(w["type"], frozenset(w["drugs"])) for w in expect.get("issues") or ()]

        for name, status in want_items.items():
            s.items += 1
            got = got_items.get(name)
            if got is not None and got.status == status:
                s.statuses_right += 1
            else:
                s.errors.append(f"{cid}: {name} {got.status if got else 'absent'} != {status}")
            pair_wanted = status in ("continued", "changed")
            s.pairs_expected += pair_wanted
            s.discrepant_expected += status != "continued"
            labelled = status != "continued" or any(name in names for _, names in want_issues)
            if got is not None and got.status == "continued" and name not in flagged and labelled:
                s.unsafe.append(f"{cid}: {name} labelled {status}, called continued unseen")
            if got is not None and got.before and got.after and not pair_wanted:
                s.unsafe.append(f"{cid}: {name} labelled {status} but paired")
        paired: set[str] = set()  # each labelled item is found at most once
        discrepant: set[str] = set()
        for item in result.items:
            name, label = item.ingredient, want_items.get(item.ingredient)
            if item.before and item.after:
                s.pairs_found += 1
                if label in ("continued", "changed") and name not in paired:
                    paired.add(name)
                    s.pairs_right += 1
            if item.status != "continued":
                s.discrepant_found += 1
                if label is not None and label != "continued" and name not in discrepant:
                    discrepant.add(name)
                    s.discrepant_right += 1

        s.issues_expected += len(want_issues)
        s.issues_found += len(got_issues)
        unmatched_got = list(got_issues)
        for kind, names in want_issues:
            hit = next((g for g in unmatched_got if g == (kind, names)), None)
            if hit is not None:
                unmatched_got.remove(hit)
                s.issues_matched += 1
            else:
                s.errors.append(f"{cid}: missing {kind} {sorted(names)}")
                if kind in HARM_TYPES and not any(names <= g for _, g in got_issues):
                    s.unsafe.append(f"{cid}: {kind} {sorted(names)} not raised")
        for kind, names in unmatched_got:
            s.errors.append(f"{cid}: extra {kind} {sorted(names)}")
    return s


def figures(s: Scores) -> dict[str, str]:
    """name=value figures (percentages with one decimal, counts as integers)."""
    def pct(a: int, b: int) -> str:
        r = Scores.ratio(a, b)
        return "n/a" if r is None else f"{100 * r:.1f}"

    return {
        "cases": str(s.cases),
        "items": str(s.items),
        "status_accuracy_pct": pct(s.statuses_right, s.items),
        "issue_precision_pct": pct(s.issues_matched, s.issues_found),
        "issue_recall_pct": pct(s.issues_matched, s.issues_expected),
        "matched_precision_pct": pct(s.pairs_right, s.pairs_found),
        "matched_recall_pct": pct(s.pairs_right, s.pairs_expected),
        "discrepancy_precision_pct": pct(s.discrepant_right, s.discrepant_found),
        "discrepancy_recall_pct": pct(s.discrepant_right, s.discrepant_expected),
        "unsafe": str(len(s.unsafe)),
    }
