"""Reading an export on Spark: every `*.ndjson` / `*.ndjson.gz` under a folder (any file
name; the type comes from each line's resourceType), split by type into a staging folder
in one pass. A line that is not a JSON object with a resourceType is kept aside and then
reported with its file and line number; it never stops the run."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

MALFORMED = "_malformed"
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


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


def split_by_type(spark: Any, folder: Path, staging: Path) -> dict[str, int]:
    """Write the lines of the export into staging/_rt=<type>/ (text); malformed lines go
    to staging/_rt=_malformed/ as `file<TAB>text`. Returns the line count per type."""
    lines = (
        spark.read.option("recursiveFileLookup", "true")
        .option("pathGlobFilter", "*.{ndjson,ndjson.gz}")
        .text(str(folder))
        .filter(F.trim(F.col("value")) != "")
    )
    rt = F.from_json(F.col("value"), "resourceType STRING").getField("resourceType")
    ok = rt.isNotNull() & rt.rlike(_TYPE.pattern)
    out = lines.select(
        F.when(ok, F.col("value"))
        .otherwise(F.concat(F.input_file_name(), F.lit("\t"), F.col("value")))
        .alias("value"),
        F.when(ok, rt).otherwise(F.lit(MALFORMED)).alias("_rt"),
    )
    out.write.mode("overwrite").partitionBy("_rt").text(str(staging))
    counts: dict[str, int] = {}
    for part in sorted(staging.glob("_rt=*")):
        counts[part.name.removeprefix("_rt=")] = sum(_count_lines(f) for f in _parts(part))
    return counts


def type_frame(spark: Any, staging: Path, resource_type: str) -> DataFrame | None:
    """The resources of one type (schema inferred from the data), or None when absent."""
    folder = staging / f"_rt={resource_type}"
    if not folder.is_dir() or not any(_parts(folder)):
        return None
    return spark.read.option("mode", "PERMISSIVE").json(str(folder))


def present_types(staging: Path) -> list[str]:
    return sorted(
        p.name.removeprefix("_rt=")
        for p in staging.glob("_rt=*")
        if p.name != f"_rt={MALFORMED}" and any(_parts(p))
    )


def _parts(folder: Path) -> Iterator[Path]:
    return (p for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_")))


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def bad_lines(staging: Path) -> list[BadLine]:
    """File and line of every malformed line (files with one are scanned again here)."""
    files: set[str] = set()
    folder = staging / f"_rt={MALFORMED}"
    if folder.is_dir():
        for part in _parts(folder):
            with part.open(encoding="utf-8", errors="replace") as fh:
                files |= {line.split("\t", 1)[0] for line in fh if "\t" in line}
    out: list[BadLine] = []
    for uri in sorted(files):
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
