"""Reading an export on Spark: every `*.ndjson` / `*.ndjson.gz` under a folder (any file
name; the type comes from each line's resourceType), parsed with the views' schema in one
pass and kept in memory (spilled to local disk past it) for the facts. A line that is not a
JSON object with a resourceType is kept aside and then reported with its file and line
number; it never stops the run."""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from fhircare.population.spark_rules import sql_text

MALFORMED = "_malformed"
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
# the first resourceType member of a line: the top-level one in any export seen so far
_CANDIDATE = r'"resourceType"\s*:\s*"([A-Za-z]{1,64})"'


@dataclass(frozen=True)
class BadLine:
    file: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.problem}"


def input_files(folder: Path) -> list[Path]:
    """The export's files: *.ndjson and *.ndjson.gz anywhere under `folder`."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.name.endswith((".ndjson", ".ndjson.gz"))
    )


def parse_export(spark: Any, folder: Path, schemas: dict[str, StructType]) -> DataFrame | None:
    """One pass over the export, kept in memory: each line's `rtype` (its resourceType), the
    types of `schemas` parsed with their schema (a column per type), and the `file` of a
    malformed line (rtype `_malformed`). None when the export has no file.

    Each line is parsed once: a text match finds its candidate type, the line is parsed with
    that type's schema, and the parsed resourceType confirms the candidate. Only a line it
    does not confirm (malformed, a type no view reads, a contained resource's type matched
    first) is parsed again, for its resourceType alone. The query is written as SQL text (a
    few JVM calls, where building it from column functions took hundreds of py4j calls)."""
    if not input_files(folder):  # an empty export: nothing to read
        return None
    lines = (
        spark.read.option("recursiveFileLookup", "true")
        .option("pathGlobFilter", "*.{ndjson,ndjson.gz}")
        .text(str(folder))
    )
    names = sorted(schemas)
    typed = {name: sql_text(_with_type(schemas[name]).json()) for name in names}
    guess = f"regexp_extract(value, {sql_text(_CANDIDATE)}, 1)"
    parsed_type = "coalesce(" + ", ".join(f"`{name}`.resourceType" for name in names) + ", NULL)"
    confirmed = f"coalesce({parsed_type} = _guess, false)"
    rt = (
        f"(CASE WHEN {confirmed} THEN _guess"
        " ELSE from_json(value, 'resourceType STRING').resourceType END)"
    )
    ok = f"({rt} IS NOT NULL AND {rt} RLIKE {sql_text(_TYPE.pattern)})"
    columns = [
        f"CASE WHEN {ok} THEN {rt} ELSE {sql_text(MALFORMED)} END AS rtype",
        f"CASE WHEN NOT {ok} THEN input_file_name() END AS file",
        *[
            f"CASE WHEN {confirmed} THEN `{name}` WHEN {rt} = {sql_text(name)}"
            f" THEN from_json(value, {typed[name]}) END AS `{name}`"
            for name in names
        ],
    ]
    return (
        lines.where("trim(value) != ''")
        .selectExpr("value", f"{guess} AS _guess")
        .selectExpr(
            "value",
            "_guess",
            *[
                f"CASE WHEN _guess = {sql_text(name)} THEN from_json(value, {typed[name]})"
                f" END AS `{name}`"
                for name in names
            ],
        )
        .selectExpr(*columns)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )


def _with_type(schema: StructType) -> StructType:
    """The schema with resourceType (which confirms a line's candidate type)."""
    if "resourceType" in schema.fieldNames():
        return schema
    return StructType([*schema.fields, StructField("resourceType", StringType())])


def type_counts(parsed: DataFrame | None) -> dict[str, int]:
    """The line count per resourceType (and of malformed lines); reads the whole export."""
    if parsed is None:
        return {}
    return {row["rtype"]: row["count"] for row in parsed.groupBy("rtype").count().collect()}


def type_frame(parsed: DataFrame | None, resource_type: str) -> DataFrame | None:
    """The resources of one type (its parsed struct), or None without an export."""
    if parsed is None:
        return None
    return parsed.filter(F.col("rtype") == F.lit(resource_type)).select(f"`{resource_type}`.*")


def bad_lines(parsed: DataFrame | None) -> list[BadLine]:
    """File and line of every malformed line (files with one are scanned again here)."""
    if parsed is None:
        return []
    malformed = parsed.filter(F.col("rtype") == F.lit(MALFORMED))
    rows = malformed.select("file").distinct().collect()
    out: list[BadLine] = []
    for uri in sorted(r["file"] for r in rows if r["file"]):
        out += scan_file(_local_path(uri))
    return out


def _local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("file", "") else Path(uri)


def scan_file(path: Path) -> list[BadLine]:
    """The malformed lines of one ndjson file (gzip when its name ends in .gz)."""
    out: list[BadLine] = []
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                problem = line_problem(line)
                if problem:
                    out.append(BadLine(str(path), n, problem))
    except OSError as exc:
        out.append(BadLine(str(path), 0, f"cannot be read ({exc})"))
    return out


def line_problem(line: str) -> str | None:
    """Why one ndjson line is not a resource, or None."""
    text = line.rstrip("\r\n")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            return "not valid JSON (cut short)"
        return f"not valid JSON ({exc.msg} at column {exc.pos + 1})"
    if not isinstance(data, dict):
        return "not a JSON object"
    rt = data.get("resourceType")
    if not isinstance(rt, str) or not _TYPE.match(rt):
        return "no resourceType"
    return None
