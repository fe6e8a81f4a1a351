"""Chronic Care Management eligibility and the high-risk flag of one patient.

The rules are those of `mappings/case-finding.yaml` (CCM: two or more distinct chronic
conditions of `mappings/chronic-conditions.yaml`; high risk: 3+ chronic conditions, a
hospital discharge within 30 days, an active social-needs Condition, a latest PHQ-9 total of
10 or more, a behavioural-health condition, or ADL dependence). Here they run on one patient:
the patient's resources are read from the store, the case-finding ViewDefinitions are
evaluated on them with fhirpathpy, and `fhircare.population.rules` decides, exactly as the
panel-wide Spark path does. Every decision carries its reasons.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhircare.care.common import Resource, codings_of
from fhircare.population.rules import Eligibility, case_finding, classify_chronic, decide
from fhircare.population.rules import patient_facts as facts_of_rows
from fhircare.population.views import view_rows
from fhircare.store.base import Store

__all__ = ["Eligibility", "assess_eligibility", "matching_condition_keys", "patient_facts"]


def matching_condition_keys(condition: Resource) -> set[str]:
    """The chronic-condition keys a Condition's code matches (ICD-10-CM prefix / SNOMED)."""
    out: set[str] = set()
    for system, code in codings_of(condition.get("code")):
        out |= classify_chronic(system, code)
    return out


def _search_params(resource_type: str, patient_ref: str) -> list[tuple[str, str]]:
    """Search of a patient's resources of one type: narrowed by code when every fact on
    views of that type tests the coding."""
    cf = case_finding()
    codes: set[tuple[str, str]] = set()
    for fact in cf.facts:
        if cf.views[fact.view].resource != resource_type:
            continue
        tests = [t for t in fact.where if t.op == "coding_in"]
        if not tests:
            return [("patient", patient_ref)]
        codes |= set(tests[0].values)
    joined = ",".join(f"{s}|{c}" for s, c in sorted(codes))
    return [("patient", patient_ref), ("code", joined)]


def patient_facts(store: Store, patient_ref: str, *, now: datetime | None = None) -> dict[str, Any]:
    """The case-finding facts of one patient, from the store."""
    cf = case_finding()
    by_type: dict[str, list[Resource]] = {}
    for view in cf.views.values():
        if view.resource not in by_type:
            by_type[view.resource] = store.search(
                view.resource, _search_params(view.resource, patient_ref)
            )
    rows = {vid: view_rows(view, by_type[view.resource]) for vid, view in cf.views.items()}
    return facts_of_rows(rows, now=now)


def assess_eligibility(
    store: Store, patient_ref: str, *, now: datetime | None = None
) -> Eligibility:
    """CCM eligibility and high-risk flag of a patient, with reasons."""
    return decide(patient_ref, patient_facts(store, patient_ref, now=now))
