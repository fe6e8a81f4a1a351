"""SQL on FHIR ViewDefinitions (profiles/views/): loading, the supported subset, and rows of
a few resources evaluated with fhirpathpy (the per-patient path; Spark compiles the same
views in `spark_views`).

Supported subset (anything else is refused with `UnsupportedView`): `resource`, `select`
with `column` and at most one `forEach` / `forEachOrNull` per select, nested `select`, the
view-level `where`, and paths made of steps `member`, `first()`, `exists()`, `empty()`,
`ofType(Type)` and `where(member = 'literal')`. No `unionAll`, constants or `repeat`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhircare.fhir.fhirpath import split_steps
from fhircare.paths import profiles_dir

Resource = dict[str, Any]
Row = dict[str, Any]

_MEMBER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_OFTYPE = re.compile(r"^ofType\(([A-Za-z][A-Za-z0-9]*)\)$")
_WHERE = re.compile(r"^where\(([A-Za-z][A-Za-z0-9_]*)\s*=\s*'([^'\\]*)'\)$")
_FUNCS = {"first()", "exists()", "empty()"}


class UnsupportedView(ValueError):
    """A ViewDefinition outside the subset fhircare evaluates."""


@dataclass(frozen=True)
class Step:
    """One step of a path: kind is member, first, exists, empty, oftype or where."""

    kind: str
    name: str = ""  # member name, ofType's type, where()'s member
    literal: str = ""  # where()'s literal


@lru_cache(maxsize=512)
def parse_path(path: str) -> tuple[Step, ...]:
    """The steps of a path in the supported subset, or UnsupportedView."""
    out: list[Step] = []
    for text in (step.strip() for step in split_steps(path)):
        if text in _FUNCS:
            out.append(Step(text[:-2]))
        elif m := _OFTYPE.match(text):
            out.append(Step("oftype", m.group(1)))
        elif m := _WHERE.match(text):
            out.append(Step("where", m.group(1), m.group(2)))
        elif _MEMBER.match(text):
            out.append(Step("member", text))
        else:
            raise UnsupportedView(
                f"path {path!r}: step {text!r} is outside the supported subset "
                "(member, first(), exists(), empty(), ofType(T), where(member = 'literal'))"
            )
    return tuple(out)


@dataclass(frozen=True)
class Column:
    name: str
    path: str
    collection: bool = False


@dataclass(frozen=True)
class Select:
    columns: tuple[Column, ...]
    for_each: str | None = None
    or_null: bool = False  # forEachOrNull: keep the row when the collection is empty
    selects: tuple[Select, ...] = ()


@dataclass(frozen=True)
class View:
    id: str
    resource: str
    selects: tuple[Select, ...]
    where: tuple[str, ...]

    @property
    def column_names(self) -> list[str]:
        names: list[str] = []

        def walk(sel: Select) -> None:
            names.extend(c.name for c in sel.columns)
            for sub in sel.selects:
                walk(sub)

        for sel in self.selects:
            walk(sel)
        return names


_SELECT_KEYS = {"column", "select", "forEach", "forEachOrNull"}


def _select(data: dict[str, Any], where: str) -> Select:
    extra = set(data) - _SELECT_KEYS
    if extra:
        raise UnsupportedView(f"{where}: {', '.join(sorted(extra))} not supported")
    if "forEach" in data and "forEachOrNull" in data:
        raise UnsupportedView(f"{where}: both forEach and forEachOrNull")
    for_each = data.get("forEach") or data.get("forEachOrNull")
    if for_each:
        parse_path(for_each)
    columns = []
    for col in data.get("column") or []:
        parse_path(col["path"])
        columns.append(Column(col["name"], col["path"], bool(col.get("collection"))))
    subs = tuple(_select(s, where) for s in data.get("select") or [])
    return Select(tuple(columns), for_each, "forEachOrNull" in data, subs)


def parse_view(data: dict[str, Any]) -> View:
    """A ViewDefinition resource checked against the supported subset."""
    if data.get("resourceType") != "ViewDefinition" or not data.get("resource"):
        raise UnsupportedView("not a ViewDefinition with a resource")
    vid = data.get("id") or data.get("name") or "view"
    if data.get("constant"):
        raise UnsupportedView(f"{vid}: constants not supported")
    where = tuple(w["path"] for w in data.get("where") or [])
    for w in where:
        parse_path(w)
    selects = tuple(_select(s, vid) for s in data.get("select") or [])
    view = View(vid, data["resource"], selects, where)
    names = view.column_names
    if len(names) != len(set(names)):
        raise UnsupportedView(f"{vid}: duplicate column names")
    return view


@lru_cache(maxsize=64)
def load_view(view_id: str) -> View:
    """profiles/views/ViewDefinition-<id>.json, parsed."""
    path = profiles_dir() / "views" / f"ViewDefinition-{view_id}.json"
    return parse_view(json.loads(path.read_text(encoding="utf-8")))


# ---- the per-patient path: fhirpathpy over a few resources -------------------------------


@lru_cache(maxsize=512)
def _compiled(path: str) -> Any:
    from fhirpathpy import compile as fp_compile
    from fhirpathpy.models import models

    return fp_compile(path, models["r4"])


def _values(node: Any, path: str) -> list[Any]:
    found = _compiled(path)(node)
    return [getattr(v, "data", v) if not isinstance(v, dict) else v for v in found]


def _select_rows(sel: Select, node: Any) -> list[Row]:
    nodes = _values(node, sel.for_each) if sel.for_each else [node]
    if sel.for_each and not nodes and sel.or_null:
        nodes = [None]
    rows: list[Row] = []
    for item in nodes:
        base: Row = {}
        for col in sel.columns:
            vals = _values(item, col.path) if item is not None else []
            base[col.name] = vals if col.collection else (vals[0] if vals else None)
        combos = [base]
        for sub in sel.selects:
            sub_rows = _select_rows(sub, item) if item is not None else []
            combos = [{**c, **s} for c in combos for s in sub_rows]
        rows.extend(combos)
    return rows


def view_rows(view: View, resources: list[Resource]) -> list[Row]:
    """The view's rows over `resources` (those of other types are ignored)."""
    rows: list[Row] = []
    for res in resources:
        if res.get("resourceType") != view.resource:
            continue
        if not all(_truthy(_values(res, w)) for w in view.where):
            continue
        combos: list[Row] = [{}]
        for sel in view.selects:
            combos = [{**c, **r} for c in combos for r in _select_rows(sel, res)]
        rows.extend(combos)
    return rows


def _truthy(values: list[Any]) -> bool:
    return len(values) == 1 and values[0] is True
