"""The case-finding ViewDefinitions (profiles/views/) and rule definitions: shape per the
SQL on FHIR v2 ViewDefinition, the supported FHIRPath subset, refusal of the rest, and the
per-patient evaluation with fhirpathpy."""

from __future__ import annotations

import json

import pytest

from fhircare.paths import profiles_dir
from fhircare.population.rules import case_finding, classify_chronic, decide, patient_facts
from fhircare.population.views import UnsupportedView, load_view, parse_view, view_rows

VIEWS = sorted((profiles_dir() / "views").glob("ViewDefinition-*.json"))


@pytest.mark.parametrize("path", VIEWS, ids=lambda p: p.stem)
def test_view_definitions_have_the_sql_on_fhir_shape(path) -> None:
    data = json.loads(path.read_text())
    assert data["resourceType"] == "ViewDefinition" and data["status"] == "active"
    assert data["url"].endswith("/" + data["id"]) and data["name"].isidentifier()
    assert data["resource"] in {"Patient", "Condition", "Encounter", "Observation"}
    for select in data["select"]:
        assert set(select) <= {"column", "select", "forEach", "forEachOrNull"}
        for col in select.get("column", []):
            assert col["name"].isidentifier() and col["path"] and col["type"]
    view = parse_view(data)
    assert view.column_names[0] == "id"


def test_every_fact_reads_a_shipped_view() -> None:
    cf = case_finding()
    shipped = {p.stem.removeprefix("ViewDefinition-") for p in VIEWS}
    assert {f.view for f in cf.facts} | {cf.panel.id} <= shipped


@pytest.mark.parametrize(
    "path",
    [
        "code.coding.system + '|' + code",
        "extension('http://x').value",
        "name.where(use = 'official' and period.exists()).family",
        "subject.resolve()",
        "value.ofType(Quantity).value.toString()",
    ],
)
def test_paths_outside_the_subset_are_refused(path: str) -> None:
    view = {
        "resourceType": "ViewDefinition",
        "resource": "Observation",
        "select": [{"column": [{"name": "x", "path": path}]}],
    }
    with pytest.raises(UnsupportedView):
        parse_view(view)


def test_union_all_and_constants_are_refused() -> None:
    base = {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active"}
    with pytest.raises(UnsupportedView, match="unionAll"):
        parse_view({**base, "select": [{"unionAll": []}]})
    with pytest.raises(UnsupportedView, match="constants"):
        parse_view({**base, "constant": [{"name": "a", "valueString": "b"}], "select": []})


def test_rows_with_for_each_choice_types_and_first() -> None:
    condition = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "Patient/p"},
        "clinicalStatus": {"coding": [{"code": "active"}, {"code": "recurrence"}]},
        "abatementString": "in childhood",
        "code": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "44054006"},
                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"},
            ]
        },
    }
    rows = view_rows(load_view("case-condition-code"), [condition, {"resourceType": "Patient"}])
    assert [(r["system"][-3:], r["code"]) for r in rows] == [("sct", "44054006"), ("-cm", "E11.9")]
    assert all(r["clinical_status"] == "active" and r["abated"] is True for r in rows)


def test_one_icd10_code_can_mean_two_chronic_conditions() -> None:
    # I11.0 hypertensive heart disease with heart failure: hypertension and heart failure
    assert classify_chronic("http://hl7.org/fhir/sid/icd-10-cm", "I11.0") == {
        "hypertension",
        "heart-failure",
    }
    assert classify_chronic("http://snomed.info/sct", "I11.0") == set()


def test_decision_from_facts() -> None:
    facts = patient_facts({}, now=None)
    assert decide("Patient/p", facts).tier == "low"
    facts = {"chronic": ["diabetes", "hypertension"], "phq9": {"total": 12}}
    result = decide("Patient/p", facts)
    assert result.ccm_eligible and result.tier == "high"
    assert result.reasons == ["PHQ-9 total 12 (>= 10)"]
