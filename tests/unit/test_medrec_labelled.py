"""The labelled discharge set (tests/medrec_labelled): well-formed, and nothing unsafe.

The accuracy figures are printed by benchmarks/bench_medrec_accuracy.py; here only what must
hold on every run: no labelled change, omission or harmful combination passes unseen."""

from __future__ import annotations

import pytest
from fhir.resources.R4B import get_fhir_model_class

from tests.medrec_labelled.score import load_cases, resources, score

CASES = load_cases()
STATUSES = {"continued", "changed", "new", "discontinued"}
TYPES = {"omission", "high-risk", "interaction", "duplicate-therapy", "unverifiable", "unmatched"}


def test_the_set_has_40_or_more_audit_ready_cases() -> None:
    assert len(CASES) >= 40
    assert len({c["id"] for c in CASES}) == len(CASES)
    for case in CASES:
        assert case["why"].strip(), case["id"]
        assert set(case["expect"]["items"].values()) <= STATUSES, case["id"]
        for issue in case["expect"].get("issues") or ():
            assert issue["type"] in TYPES and issue["drugs"], case["id"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_each_case_is_valid_fhir(case: dict) -> None:
    for r in resources(case):
        get_fhir_model_class(r["resourceType"]).model_validate(r)


def test_nothing_unsafe_on_the_labelled_set() -> None:
    s = score(CASES)
    assert s.unsafe == []
    assert s.statuses_right / s.items >= 0.9, s.errors
