"""LACE readmission index: components on hand-made encounters and conditions."""

from __future__ import annotations

from typing import Any

import pytest

from fhircare.fhir.validation import validate_resource
from fhircare.transitions import lace

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
P = "Patient/p1"


def enc(eid: str, cls: str, start: str, end: str | None = None, **extra: Any) -> dict[str, Any]:
    period = {"start": start} | ({"end": end} if end else {})
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": ACT, "code": cls},
        "subject": {"reference": P},
        "period": period,
        **extra,
    }


def cond(cid: str, system: str, code: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": status,
                }
            ]
        },
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": P},
    }


@pytest.mark.parametrize(
    ("days", "points"),
    [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (6, 4), (7, 5), (13, 5), (14, 7), (40, 7)],
)
def test_length_of_stay_points(days: int, points: int) -> None:
    assert lace.length_points(days) == points


def test_length_of_stay_uses_calendar_dates() -> None:
    same_day = enc("e", "IMP", "2025-03-03T08:00:00-05:00", "2025-03-03T20:00:00-05:00")
    assert lace.length_of_stay_days(same_day) == 0
    overnight = enc("e", "IMP", "2025-03-03T23:00:00-05:00", "2025-03-04T01:00:00-05:00")
    assert lace.length_of_stay_days(overnight) == 1
    fortnight = enc("e", "IMP", "2025-03-01T10:00:00Z", "2025-03-15T10:00:00Z")
    assert lace.length_of_stay_days(fortnight) == 14


def test_acuity() -> None:
    start, end = "2025-03-03T10:00:00Z", "2025-03-06T10:00:00Z"
    elective = enc("e1", "IMP", start, end)
    assert not lace.is_emergent(elective, [])
    assert lace.is_emergent(enc("e1", "EMER", start, end), [])
    via_source = enc(
        "e1",
        "IMP",
        start,
        end,
        hospitalization={
            "admitSource": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/admit-source", "code": "emd"}
                ]
            }
        },
    )
    assert lace.is_emergent(via_source, [])
    via_priority = enc(
        "e1",
        "IMP",
        start,
        end,
        priority={
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActPriority", "code": "EM"}
            ]
        },
    )
    assert lace.is_emergent(via_priority, [])
    ed_before = enc("ed", "EMER", "2025-03-03T04:00:00Z", "2025-03-03T09:00:00Z")
    assert lace.is_emergent(elective, [elective, ed_before])
    long_before = enc("ed", "EMER", "2025-02-20T04:00:00Z", "2025-02-20T09:00:00Z")
    assert not lace.is_emergent(elective, [elective, long_before])


def test_charlson_from_icd10_and_snomed() -> None:
    conditions = [
        cond("chf", ICD, "I50.9"),  # CHF 1
        cond("dm-simple", ICD, "E11.9"),  # superseded by the complicated diabetes
        cond("dm-kidney", ICD, "E11.22"),  # diabetes with chronic complication 2
        cond("old-cancer", ICD, "C50.911", status="resolved"),  # not active: ignored
        cond("htn", ICD, "I10"),  # not a Charlson category
    ]
    index, cats = lace.charlson_index(conditions)
    assert index == 3
    assert set(cats) == {"congestive-heart-failure", "diabetes-with-complication"}
    snomed = [cond("a", SCT, "88805009"), cond("b", SCT, "185086009"), cond("c", SCT, "88805009")]
    index, cats = lace.charlson_index(snomed)
    assert index == 2  # each category counts once
    assert cats["congestive-heart-failure"] == ["Condition/a", "Condition/c"]
    assert lace.comorbidity_points(3) == 3
    assert lace.comorbidity_points(4) == 5
    assert lace.comorbidity_points(9) == 5
    metastatic = [cond("m", ICD, "C78.00"), cond("t", ICD, "C34.90")]
    assert lace.charlson_index(metastatic)[0] == 6


def test_ed_visits_window_and_cap() -> None:
    index = enc("idx", "IMP", "2025-06-10T10:00:00Z", "2025-06-12T10:00:00Z")
    visits = [
        enc(f"ed{i}", "EMER", f"2025-0{m}-15T10:00:00Z", f"2025-0{m}-15T14:00:00Z")
        for i, m in enumerate([1, 2, 3, 4, 5])
    ]
    old = enc("old", "EMER", "2024-11-01T10:00:00Z", "2024-11-01T12:00:00Z")
    leading = enc("lead", "EMER", "2025-06-10T02:00:00Z", "2025-06-10T09:00:00Z")
    found = lace.prior_ed_visits(index, [index, *visits, old, leading])
    assert [e["id"] for e in found] == ["ed0", "ed1", "ed2", "ed3", "ed4"]
    assert lace.ed_points(len(found)) == 4
    assert lace.ed_points(3) == 3


def test_compute_and_observation() -> None:
    index = enc("idx", "EMER", "2025-06-01T10:00:00Z", "2025-06-08T10:00:00Z")  # 7 d: L 5, A 3
    conditions = [cond("chf", ICD, "I50.9"), cond("copd", SCT, "185086009")]  # C 2
    visits = [enc("ed1", "EMER", "2025-05-01T10:00:00Z", "2025-05-01T12:00:00Z")]  # E 1
    score = lace.compute(index, conditions, [index, *visits])
    assert (score.length, score.acuity, score.comorbidity, score.emergency) == (5, 3, 2, 1)
    assert score.total == 11
    assert score.risk == "high"
    obs = lace.observation(score, index, P)
    validate_resource(obs)
    assert obs["valueInteger"] == 11
    assert obs["interpretation"][0]["coding"][0]["code"] == "high-risk"
    assert obs["category"][0]["coding"][0]["code"] == "survey"
    assert {c["code"]["coding"][0]["code"]: c.get("valueInteger") for c in obs["component"]}[
        "lace-acuity"
    ] == 3
    assert obs["id"] == lace.observation_id("idx")
    prov = lace.provenance(score, obs)
    validate_resource(prov)
    sources = {e["what"]["reference"] for e in prov["entity"]}
    assert sources == {
        "Encounter/idx",
        "Condition/chf",
        "Condition/copd",
        "Encounter/ed1",
    }
    low = lace.compute(enc("x", "IMP", "2025-06-01T10:00:00Z", "2025-06-02T10:00:00Z"), [], [])
    assert (low.total, low.risk) == (1, "low")
