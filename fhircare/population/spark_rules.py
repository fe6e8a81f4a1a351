"""The case-finding facts (mappings/case-finding.yaml) compiled into Spark queries: one
row per Patient with a column per fact, over the views of `spark_views`.

Each `Test` becomes a column predicate, `classify: chronic-conditions` an array of the
matching condition keys, `distinct` a sorted `collect_set` and `latest` a `max_by` on
(time, id), exactly as `rules.patient_facts` does for one patient.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fhircare.care.common import utcnow
from fhircare.population.rules import ICD10, SNOMED, CaseFinding, Fact, Test, case_finding

EPOCH = datetime(1900, 1, 1, tzinfo=UTC)  # orders a row without a time first
_PATIENT_REF = r"(?:^|/)Patient/([^/]+)$"


def _timestamp(column: Column) -> Column:
    return column.try_cast("timestamp")


def _test(test: Test, at: datetime) -> Column:
    if test.op == "coding_in":
        system, code = (F.col(c) for c in test.columns)
        hit = F.lit(False)
        for s, c in test.values:
            hit = hit | ((system == F.lit(s)) & (code == F.lit(c)))
        return F.coalesce(hit, F.lit(False))
    col = F.col(test.columns[0])
    if test.op == "in":
        return F.coalesce(col.cast("string").isin(list(test.values)), F.lit(False))
    if test.op == "not_in":
        return ~F.coalesce(col.cast("string").isin(list(test.values)), F.lit(False))
    if test.op == "is":
        return F.coalesce(col.cast("boolean"), F.lit(False)) == F.lit(test.values[0])
    since = at - timedelta(days=test.days)  # aware datetimes: the same instant in any zone
    ts = _timestamp(col)
    return F.coalesce((ts >= F.lit(since)) & (ts <= F.lit(at)), F.lit(False))


def sql_text(value: str) -> str:
    """A Spark SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sql_map(entries: dict[str, list[str]]) -> str:
    """A literal Spark SQL map of string -> array of strings."""
    items = ", ".join(
        f"{sql_text(k)}, array({', '.join(sql_text(v) for v in values)})"
        for k, values in sorted(entries.items())
    )
    return f"map({items})"


def _chronic_keys(cf: CaseFinding) -> Column:
    """The chronic-condition keys of the row's (system, code), as an array (a key may appear
    twice when two of its prefixes match; the facts keep each key once).

    One SQL expression (one JVM call instead of hundreds of py4j round trips), looked up in
    literal maps: an ICD-10-CM code's prefix of each length the lists use, a SNOMED code as
    it is. A chain of startswith tests generated a method too large for the JIT."""
    plain = "upper(translate(code, '.', ''))"
    prefixes, snomed = cf.chronic_codes()
    by_length: dict[int, dict[str, list[str]]] = {}
    for key, codes in prefixes.items():
        for prefix in codes:
            by_length.setdefault(len(prefix), {}).setdefault(prefix, []).append(key)
    icd = ", ".join(
        f"coalesce(try_element_at({_sql_map(entries)}, substring({plain}, 1, {n})), array())"
        for n, entries in sorted(by_length.items())
    )
    sct = f"coalesce(try_element_at({_sql_map(snomed)}, code), array())" if snomed else "array()"
    return F.expr(
        f"CASE WHEN system = {sql_text(ICD10)} THEN flatten(array({icd or 'array()'}))"
        f" WHEN system = {sql_text(SNOMED)} THEN {sct} END"
    )


def _first(columns: tuple[str, ...]) -> Column:
    return F.coalesce(*[F.col(c) for c in columns]) if len(columns) > 1 else F.col(columns[0])


def _fact_frame(fact: Fact, rows: DataFrame, cf: CaseFinding, at: datetime) -> DataFrame:
    for test in fact.where:
        rows = rows.filter(_test(test, at))
    rows = rows.withColumn("_patient", F.regexp_extract(F.col("patient"), _PATIENT_REF, 1))
    rows = rows.filter(F.col("_patient") != "")
    if fact.collect == "distinct":
        if fact.classify:
            value = F.explode(_chronic_keys(cf))
        else:
            value = _first(fact.value[0][1])
            if fact.default is not None:
                value = F.coalesce(value, F.lit(fact.default))
        rows = rows.select("_patient", value.alias("_v")).filter(F.col("_v").isNotNull())
        return rows.groupBy("_patient").agg(F.array_sort(F.collect_set("_v")).alias(fact.name))
    order = F.struct(
        F.coalesce(_timestamp(_first(fact.order)), F.lit(EPOCH)).alias("t"),
        F.coalesce(F.col("id"), F.lit("")).alias("id"),
    )
    value = F.struct(*[_first(cols).alias(name) for name, cols in fact.value])
    return rows.groupBy("_patient").agg(F.max_by(value, order).alias(fact.name))


def facts_frame(
    panel: DataFrame,
    frame_of: Callable[[str], DataFrame],
    *,
    now: datetime | None = None,
    definitions: CaseFinding | None = None,
) -> DataFrame:
    """One row per Patient of `panel` (the panel view's rows): `patient` ("Patient/id") and a
    column per fact; `frame_of(view_id)` gives a fact view's rows."""
    cf = definitions or case_finding()
    at = utcnow(now)
    out = panel.select(F.col("id").alias("_patient")).filter(F.col("_patient").isNotNull())
    out = out.dropDuplicates(["_patient"])
    for fact in cf.facts:
        out = out.join(_fact_frame(fact, frame_of(fact.view), cf, at), "_patient", "left")
    return out.select(F.concat(F.lit("Patient/"), F.col("_patient")).alias("patient"), "*").drop(
        "_patient"
    )
