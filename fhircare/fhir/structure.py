"""Validation from the R4 element definitions (the registry), for what the models miss.

Used in full for the resource types whose fhir.resources R4B model differs from R4 (types
R4B removed or restructured), and, for every type, for required code bindings (the R4
value sets, not R4B's). Checks: unknown elements, single vs repeating, minimum and maximum
cardinality, JSON types and the regex of primitives, required bindings of `code`
elements, and contained resources in turn.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

from fhircare.fhir import registry

Problem = tuple[str, str]  # (expression, message)

_INTEGER_TYPES = {"integer", "positiveInt", "unsignedInt"}


@cache
def _regex(type_code: str) -> re.Pattern[str] | None:
    pattern = registry.types().primitives.get(type_code)
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _primitive_problem(type_code: str, value: Any, where: str) -> str | None:
    if type_code == "boolean":
        ok = isinstance(value, bool)
    elif type_code in _INTEGER_TYPES:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and type_code == "positiveInt" and value < 1:
            return f"{where}: {value} is not a positiveInt"
        if ok and type_code == "unsignedInt" and value < 0:
            return f"{where}: {value} is not an unsignedInt"
    elif type_code == "decimal":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
        if ok and type_code not in ("xhtml", "string", "markdown"):
            rx = _regex(type_code)
            if rx is not None and not rx.fullmatch(value):
                return f"{where}: {value[:40]!r} is not a valid {type_code}"
    return None if ok else f"{where}: the JSON type does not fit {type_code}"


def _is_primitive(type_code: str) -> bool:
    return registry.types().kind(type_code) == "primitive-type" or type_code == "xhtml"


def problems(
    data: dict[str, Any],
    resource_type: str,
    *,
    bindings_only: bool = False,
    contained: Callable[[dict[str, Any], str], list[Problem]] | None = None,
) -> list[Problem]:
    """Every problem found (bindings only, for types a model already validated)."""
    return list(_walk(data, resource_type, resource_type, bindings_only, contained))


def _walk(
    node: dict[str, Any],
    type_path: str,
    where: str,
    bindings_only: bool,
    contained: Callable[[dict[str, Any], str], list[Problem]] | None,
) -> Iterator[Problem]:
    info = registry.types()
    kids = info.children(type_path)
    present: set[str] = set()
    for key, value in node.items():
        if key == "resourceType" and where.count(".") == 0:
            continue
        if key == "resourceType" and type_path in registry.resource_types():
            continue
        if key.startswith("_"):
            found = info.child(type_path, key[1:])
            if found is None and not bindings_only:
                yield f"{where}.{key}", f"{where}.{key}: Unknown element"
            continue
        found = info.child(type_path, key)
        if found is None:
            if not bindings_only:
                yield f"{where}.{key}", f"{where}.{key}: Unknown element"
            continue
        el, type_code = found
        present.add(el.path.rsplit(".", 1)[-1])
        sub = f"{where}.{key}"
        if isinstance(value, list):
            if not el.is_list and not bindings_only:
                yield sub, f"{sub}: a single value is expected, not an array"
            if el.max not in ("*", "1") and len(value) > int(el.max) and not bindings_only:
                yield sub, f"{sub}: at most {el.max} values are allowed"
            items = list(enumerate(value))
        else:
            if el.is_list and not bindings_only:
                yield sub, f"{sub}: an array is expected"
            items = [(None, value)]
        for i, item in items:
            item_where = sub if i is None else f"{sub}[{i}]"
            if item is None:
                continue
            yield from _value(item, el, type_code, item_where, bindings_only, contained)
    if bindings_only:
        return
    for name, el in kids.items():
        if el.min >= 1:
            stem = name[:-3] if name.endswith("[x]") else name
            if stem not in present and name not in present and f"_{stem}" not in node:
                yield f"{where}.{stem}", f"{where}.{stem}: Required element is missing"


def _value(
    item: Any,
    el: registry.Element,
    type_code: str,
    where: str,
    bindings_only: bool,
    contained: Callable[[dict[str, Any], str], list[Problem]] | None,
) -> Iterator[Problem]:
    info = registry.types()
    if not type_code:
        type_code = el.types[0] if el.types else ""
    if type_code == "Resource":
        if not isinstance(item, dict) or not isinstance(item.get("resourceType"), str):
            yield where, f"{where}: a resource is expected"
        elif contained is not None:
            for path, msg in contained(item, where):
                yield path, msg
        return
    if _is_primitive(type_code):
        if not bindings_only:
            msg = _primitive_problem(type_code, item, where)
            if msg:
                yield where, msg
                return
        if type_code == "code" and el.binding and isinstance(item, str):
            codes = info.codes(el.binding)
            if codes is not None and item not in codes:
                shown = ", ".join(codes[:12]) + (", ..." if len(codes) > 12 else "")
                yield where, f"{where}: '{item}' is not one of {shown}"
        return
    if not isinstance(item, dict):
        if not bindings_only:
            yield where, f"{where}: an object ({type_code}) is expected"
        return
    if type_code == "Reference" and el.target_types and "Resource" not in el.target_types:
        yield from _reference_target(item, el.target_types, where)
    yield from _walk(item, info.node_path(el, type_code), where, bindings_only, contained)


# "Type/id", "Type/id/_history/v", or an absolute URL ending so (not "#x", not "urn:...")
_TARGET = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


def _reference_target(
    item: dict[str, Any], targets: tuple[str, ...], where: str
) -> Iterator[Problem]:
    """The element's allowed target types (its targetProfiles) against the type a Reference
    names, in `reference` or in `type`."""
    allowed = ", ".join(targets)
    ref = item.get("reference")
    if isinstance(ref, str) and not ref.startswith(("#", "urn:")):
        m = _TARGET.search(ref.split("?", 1)[0])
        named = m["type"] if m else None
        if named and named not in targets and registry.is_resource_type(named):
            yield (
                f"{where}.reference",
                f"{where}.reference: {ref[:80]} is a {named}; this element refers to "
                f"{allowed}",
            )
            return
    kind = item.get("type")
    if isinstance(kind, str) and registry.is_resource_type(kind) and kind not in targets:
        yield f"{where}.type", f"{where}.type: {kind} is not one of {allowed}"
