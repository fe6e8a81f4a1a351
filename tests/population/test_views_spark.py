"""The ViewDefinitions compiled to Spark give the same rows as fhirpathpy on the same
resources: choice types, missing elements, several codings, first(), exists()."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhircare.population.spark_views import view_frame
from fhircare.population.views import load_view, parse_view, view_rows

OBSERVATIONS = [
    {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "subject": {"reference": "Patient/a"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}, {"code": "x"}]},
        "effectivePeriod": {"start": "2025-01-02"},
        "valueInteger": 12,
    },
    {
        "resourceType": "Observation",
        "id": "o2",
        "status": "final",
        "subject": {"reference": "Patient/b"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "effectiveDateTime": "2025-01-03T10:00:00+01:00",
        "valueQuantity": {"value": 70.5, "unit": "kg"},
    },
    {"resourceType": "Observation", "id": "o3", "status": "final", "code": {"text": "none"}},
]


def _frame(spark: Any, tmp_path: Path, resources: list[dict[str, Any]]) -> Any:
    path = tmp_path / "data.ndjson"
    path.write_text("\n".join(json.dumps(r) for r in resources) + "\n")
    return spark.read.json(str(path))


def _normal(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [
        {
            k: (float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v)
            for k, v in r.items()
        }
        for r in rows
    ]
    return sorted(out, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def test_observation_view_spark_equals_fhirpathpy(spark: Any, tmp_path: Path) -> None:
    view = load_view("case-observation")
    expected = view_rows(view, OBSERVATIONS)
    got = [r.asDict() for r in view_frame(view, _frame(spark, tmp_path, OBSERVATIONS)).collect()]
    assert len(got) == 3  # o3 has no coding: forEach drops it
    assert _normal(got) == _normal(expected)


def test_for_each_or_null_and_nested_where(spark: Any, tmp_path: Path) -> None:
    view = parse_view(
        {
            "resourceType": "ViewDefinition",
            "resource": "Observation",
            "select": [
                {"column": [{"name": "id", "path": "id"}]},
                {
                    "forEachOrNull": "code.coding.where(system = 'http://loinc.org')",
                    "column": [{"name": "loinc", "path": "code"}],
                },
                {"column": [{"name": "codes", "path": "code.coding.code", "collection": True}]},
            ],
        }
    )
    expected = view_rows(view, OBSERVATIONS)
    got = [r.asDict() for r in view_frame(view, _frame(spark, tmp_path, OBSERVATIONS)).collect()]
    assert {(r["id"], r["loinc"]) for r in got} == {
        ("o1", "44261-6"),
        ("o2", "29463-7"),
        ("o3", None),
    }
    assert _normal(got) == _normal(expected)


@pytest.mark.parametrize("view_id", ["case-condition-code", "case-condition-category"])
def test_condition_views_spark_equals_fhirpathpy(spark: Any, tmp_path: Path, view_id: str) -> None:
    conditions = [
        {
            "resourceType": "Condition",
            "id": "c1",
            "subject": {"reference": "Patient/a"},
            "clinicalStatus": {"coding": [{"code": "resolved"}]},
            "abatementDateTime": "2024-01-01",
            "category": [{"coding": [{"system": "s", "code": "sdoh"}, {"code": "x"}]}],
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1", "display": "D"}]},
        },
        {
            "resourceType": "Condition",
            "id": "c2",
            "subject": {"reference": "Patient/b"},
            "code": {"text": "T", "coding": [{"code": "2"}]},
            "category": [{"coding": [{"code": "problem-list-item"}]}],
        },
    ]
    view = load_view(view_id)
    expected = view_rows(view, conditions)
    got = [r.asDict() for r in view_frame(view, _frame(spark, tmp_path, conditions)).collect()]
    assert _normal(got) == _normal(expected)
