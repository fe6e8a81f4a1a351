"""The Spark facts' chronic-condition keys (literal map lookups by ICD-10-CM prefix length and
SNOMED code) agree with the per-patient classifier on every listed code and near misses."""

from __future__ import annotations

from typing import Any

from pyspark.sql import functions as F

from fhircare.population.rules import ICD10, SNOMED, case_finding, classify_chronic
from fhircare.population.spark_rules import _chronic_keys


def _codings() -> list[tuple[str | None, str | None]]:
    prefixes, snomed = case_finding().chronic_codes()
    rows: list[tuple[str | None, str | None]] = []
    for codes in prefixes.values():
        for p in codes:
            dotted = p[:3] + "." + p[3:] + "1" if len(p) > 3 else p + ".9"
            for code in (p, p + "9", p[:-1], p.lower(), dotted, "X" + p):
                rows += [(ICD10, code), (SNOMED, code), ("urn:other", code)]
    for code in snomed:
        rows += [(SNOMED, code), (ICD10, code), (SNOMED, code + "1"), (None, code)]
    return rows + [(ICD10, None), (None, None), (SNOMED, None), (ICD10, ""), (SNOMED, "")]


def test_spark_keys_are_the_per_patient_keys(spark: Any) -> None:
    rows = _codings()
    frame = spark.createDataFrame(rows, "system string, code string")
    keys = frame.select(
        "system", "code", F.array_distinct(_chronic_keys(case_finding())).alias("keys")
    )
    got = {(r["system"], r["code"]): set(r["keys"] or []) for r in keys.collect()}
    expected = {(s, c): classify_chronic(s, c) for s, c in rows}
    assert sum(1 for v in expected.values() if v) > 50  # the lists are exercised
    assert got == expected
