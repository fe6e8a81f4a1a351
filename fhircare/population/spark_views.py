"""ViewDefinitions compiled into Spark DataFrames (the subset of `views`).

Every path is compiled with FHIRPath's collection semantics: each step yields an array
column. A member missing from the inferred schema is an empty collection; a choice element
(`value`, `effective`, `abatement`) is addressed through `ofType(T)` (`valueQuantity`), or
tested as a whole with `exists()` / `empty()`. A non-collection column takes the first value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BooleanType, DataType, NullType, StringType, StructType

from fhircare.population.views import Select, Step, UnsupportedView, View, parse_path

_ABSENT = NullType()


def _empty() -> Column:
    return F.array().cast(ArrayType(StringType()))


def _field_type(dtype: DataType, name: str) -> DataType | None:
    if isinstance(dtype, StructType) and name in dtype.fieldNames():
        return dtype[name].dataType
    return None


def _choice_fields(dtype: DataType, name: str) -> list[str]:
    if not isinstance(dtype, StructType):
        return []
    return [
        f
        for f in dtype.fieldNames()
        if f.startswith(name) and len(f) > len(name) and f[len(name)].isupper()
    ]


def _field_equals(name: str, literal: str) -> Callable[[Column], Column]:
    return lambda x: x.getField(name) == F.lit(literal)


def _field_present(name: str) -> Callable[[Column], Column]:
    return lambda x: x.getField(name).isNotNull()


def _as_array(value: Column, dtype: DataType) -> tuple[Column, DataType]:
    if isinstance(dtype, ArrayType):
        return F.array_compact(F.coalesce(value, F.array().cast(dtype))), dtype.elementType
    return F.array_compact(F.array(value)), dtype


def _member(
    arr: Column | None, elem: DataType, base: Column | None, name: str
) -> tuple[Column, DataType]:
    """Step `name` from the collection `arr` of `elem` (or from the struct `base`)."""
    ftype = _field_type(elem, name)
    if ftype is None:
        return _empty(), _ABSENT
    if arr is None:  # the first step: a field of the base struct (or of the row)
        value = F.col(name) if base is None else base.getField(name)
        return _as_array(value, ftype)
    # a field of an array of structs is the array of the field's values (one JVM call, no
    # lambda: building the plan over py4j costs more than running it on small panels)
    values = arr.getField(name)
    if isinstance(ftype, ArrayType):
        return F.array_compact(F.flatten(F.array_compact(values))), ftype.elementType
    return F.array_compact(values), ftype


def compile_path(path: str, base: Column | None, base_type: StructType) -> tuple[Column, DataType]:
    """An array column holding the path's collection, and the type of its elements."""
    arr, elem, _ = compile_path_scalar(path, base, base_type)
    return arr, elem


def compile_path_scalar(
    path: str, base: Column | None, base_type: StructType
) -> tuple[Column, DataType, Column | None]:
    """compile_path, plus the single value when the path ends in exists() / empty()."""
    single: Column | None = None
    steps = list(parse_path(path))
    arr: Column | None = None
    elem: DataType = base_type
    i = 0
    while i < len(steps):
        step: Step = steps[i]
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        if step.kind == "member":
            if _field_type(elem, step.name) is None and nxt is not None and nxt.kind == "oftype":
                name = step.name + nxt.name[0].upper() + nxt.name[1:]
                arr, elem = _member(arr, elem, base, name)
                i += 2
                continue
            choices = (
                _choice_fields(elem, step.name) if _field_type(elem, step.name) is None else []
            )
            if choices:
                if nxt is None or nxt.kind not in ("exists", "empty"):
                    raise UnsupportedView(
                        f"path {path!r}: choice element {step.name}[x] needs ofType(T), "
                        "exists() or empty()"
                    )
                found = F.lit(False)
                for c in choices:  # a choice element is never repeated
                    if arr is None:
                        value = F.col(c) if base is None else base.getField(c)
                        found = found | value.isNotNull()
                    else:
                        found = found | F.exists(arr, _field_present(c))
                single = found if nxt.kind == "exists" else ~found
                arr, elem = F.array(single), BooleanType()
                i += 2
                continue
            arr, elem = _member(arr, elem, base, step.name)
        elif step.kind == "oftype":
            raise UnsupportedView(f"path {path!r}: ofType() only right after a choice element")
        else:
            if arr is None:
                raise UnsupportedView(f"path {path!r}: a function needs a member before it")
            if step.kind == "first":
                arr = F.slice(arr, 1, 1)
            elif step.kind in ("exists", "empty"):
                single = F.size(arr) > 0 if step.kind == "exists" else F.size(arr) == 0
                arr, elem = F.array(single), BooleanType()
            elif step.kind == "where":
                if _field_type(elem, step.name) is None:
                    arr, elem = _empty(), _ABSENT
                else:
                    name, literal = step.name, step.literal
                    arr = F.filter(arr, _field_equals(name, literal))
        if step.kind not in ("exists", "empty"):
            single = None
        i += 1
    if arr is None:
        raise UnsupportedView(f"path {path!r}: empty")
    return arr, elem, single


def _scalar(arr: Column, elem: DataType) -> Column:
    value = F.try_element_at(arr, F.lit(1))
    return value.cast(StringType()) if isinstance(elem, NullType) else value


def _apply_select(
    df: DataFrame, sel: Select, base: Column | None, base_type: StructType, n: list[int]
) -> tuple[DataFrame, list[Column]]:
    if sel.for_each:
        arr, elem = compile_path(sel.for_each, base, base_type)
        alias = f"_each{n[0]}"
        n[0] += 1
        explode = F.explode_outer if sel.or_null else F.explode
        df = df.withColumn(alias, explode(arr))
        if not isinstance(elem, StructType):
            elem = StructType([])
        base, base_type = F.col(alias), elem
    outs: list[Column] = []
    for col in sel.columns:
        arr, elem, single = compile_path_scalar(col.path, base, base_type)
        value = arr if col.collection else (single if single is not None else _scalar(arr, elem))
        outs.append(value.alias(col.name))
    for sub in sel.selects:
        df, sub_outs = _apply_select(df, sub, base, base_type, n)
        outs += sub_outs
    return df, outs


def view_frame(view: View, resources: DataFrame) -> DataFrame:
    """The view's rows over a DataFrame of resources of the view's type (spark.read.json)."""
    schema = resources.schema
    df = resources
    for w in view.where:
        arr, _, single = compile_path_scalar(w, None, schema)
        test = single if single is not None else F.try_element_at(arr, F.lit(1)).cast("boolean")
        df = df.filter(F.coalesce(test, F.lit(False)))
    outs: list[Column] = []
    n = [0]
    for sel in view.selects:
        df, sel_outs = _apply_select(df, sel, None, schema, n)
        outs += sel_outs
    return df.select(*outs)


def empty_view_frame(spark: Any, view: View) -> DataFrame:
    """The view's columns over no resources (a type absent from the export)."""
    return view_frame(view, spark.createDataFrame([], StructType([])))
