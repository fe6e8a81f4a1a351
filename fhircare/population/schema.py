"""The Spark schema a resource type needs for some views: only the elements their paths
name, typed from the R4 element definitions (`fhircare.fhir.registry`). Parsing the
ndjson with it skips Spark's schema inference (a full pass over the data) and every
element no view reads."""

from __future__ import annotations

from typing import Any

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from fhircare.fhir import registry
from fhircare.population.views import Select, View, parse_path

_SPARK = {
    "boolean": BooleanType(),
    "integer": LongType(),
    "positiveInt": LongType(),
    "unsignedInt": LongType(),
    "decimal": DoubleType(),
}
Tree = dict[str, dict[str, Any]]  # name -> {"list": bool, "type": code, "kids": Tree}


def _add(tree: Tree, name: str, is_list: bool, type_code: str) -> Tree:
    node = tree.setdefault(name, {"list": is_list, "type": type_code, "kids": {}})
    return node["kids"]


def _walk(path: str, tree: Tree, context: str) -> tuple[Tree, str] | None:
    """Add the elements of `path` (from the element type `context`) to the tree; the node
    and type path it ends at (for a forEach), or None when it leaves the definitions."""
    types = registry.types()
    steps = list(parse_path(path))
    i = 0
    while i < len(steps):
        step = steps[i]
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        if step.kind == "member":
            found = types.child(context, step.name)
            name = step.name
            if found is None and nxt is not None and nxt.kind == "oftype":
                name = step.name + nxt.name[0].upper() + nxt.name[1:]
                found = types.child(context, name)
                i += 1
            if found is None:
                choice = types.children(context).get(step.name + "[x]")
                if choice is not None:  # tested whole (exists/empty): every variant
                    for t in choice.types:
                        _add(tree, step.name + t[0].upper() + t[1:], False, t)
                    return None
                return None
            element, type_code = found
            type_code = type_code or element.types[0]
            tree = _add(tree, name, element.is_list, type_code)
            context = types.node_path(element, type_code)
        elif step.kind == "where":
            found = types.child(context, step.name)
            if found is not None:
                _add(tree, step.name, found[0].is_list, found[1] or found[0].types[0])
        i += 1
    return tree, context


def _select(sel: Select, tree: Tree, context: str) -> None:
    if sel.for_each:
        found = _walk(sel.for_each, tree, context)
        if found is None:
            return
        tree, context = found
    for col in sel.columns:
        _walk(col.path, tree, context)
    for sub in sel.selects:
        _select(sub, tree, context)


def _spark_type(node: dict[str, Any]) -> DataType:
    if node["kids"]:
        inner: DataType = StructType(
            [StructField(k, _spark_type(v)) for k, v in sorted(node["kids"].items())]
        )
    else:  # a primitive, or a complex value only tested for presence (kept as JSON text)
        inner = _SPARK.get(node["type"], StringType())
    return ArrayType(inner) if node["list"] else inner


def schema_for(views: list[View]) -> StructType:
    """The schema of one resource type holding every element the views read."""
    tree: Tree = {}
    for view in views:
        for w in view.where:
            _walk(w, tree, view.resource)
        for sel in view.selects:
            _select(sel, tree, view.resource)
    return StructType([StructField(k, _spark_type(v)) for k, v in sorted(tree.items())])
