"""Reading an export on Spark: one parse per line, each line's type confirmed by that parse
(a contained resource's type written first does not mislead it), types no view reads
counted, malformed lines kept aside with their file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyspark.sql.types import StringType, StructField, StructType

from fhircare.population import ingest

SCHEMAS = {
    "Patient": StructType([StructField("id", StringType()), StructField("gender", StringType())]),
    "Condition": StructType([StructField("id", StringType())]),
}


def test_each_line_is_read_as_its_top_level_type(spark: Any, tmp_path: Path) -> None:
    lines = [
        {"resourceType": "Patient", "id": "a", "gender": "female"},
        # a contained resource's type comes before the line's own
        {
            "contained": [{"resourceType": "Condition", "id": "c"}],
            "resourceType": "Patient",
            "id": "b",
        },
        {"id": "d", "resourceType": "Condition"},
        {"resourceType": "Basic", "id": "e"},  # no view reads it: counted all the same
    ]
    text = "\n".join(json.dumps(line) for line in lines)
    (tmp_path / "mixed.ndjson").write_text(text + '\n{"resourceType": "Patient", "id": \n')
    parsed = ingest.parse_export(spark, tmp_path, SCHEMAS)
    try:
        counts = ingest.type_counts(parsed)
        assert counts == {"Patient": 2, "Condition": 1, "Basic": 1, ingest.MALFORMED: 1}
        patients = ingest.type_frame(parsed, "Patient")
        assert patients is not None
        rows = {(r["id"], r["gender"]) for r in patients.collect()}
        assert rows == {("a", "female"), ("b", None)}
        conditions = ingest.type_frame(parsed, "Condition")
        assert conditions is not None and [r["id"] for r in conditions.collect()] == ["d"]
        bad = [str(b) for b in ingest.bad_lines(parsed)]
        assert bad == [f"{tmp_path / 'mixed.ndjson'}:5: not valid JSON (cut short)"]
    finally:
        assert parsed is not None
        parsed.unpersist()
