"""One test per (resource type, search parameter) the CapabilityStatement declares.

For each pair a resource is built from the parameter's own expression (the element path it
reads, with a value of the element's type) and searched with a value derived from it: the
resource must match, and the same type without that element must not. Built from the
registry, so every parameter the server declares is exercised, not a hand-picked few.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhircare.fhir import registry
from fhircare.fhir.fhirpath import _parse_member, _Step, split_union
from fhircare.fhir.registry import SearchParam
from fhircare.fhir.search import parse_query
from fhircare.fhir.search.match import embeds_resources, matches

# Parameters whose expressions are not simple paths (evaluated by fhirpathpy) get a
# hand-made resource here; everything else is derived from the expression.
SPECIAL_CASES: dict[tuple[str, str], tuple[dict[str, Any], str]] = {
    ("Patient", "deceased"): ({"deceasedBoolean": True}, "true"),
    ("InsurancePlan", "name"): ({"name": "Alpha plan"}, "alp"),
}

# What a leaf of each FHIR type holds, and the search value (per parameter type) finding it.
CODING = {"system": "http://example.org/cs", "code": "c1", "display": "Alpha"}


def _leaf(type_code: str, param: SearchParam, target: str | None) -> tuple[Any, str] | None:
    kind = param.type
    if type_code == "Reference":
        t = target or "Patient"
        return {"reference": f"{t}/r1"}, f"{t}/r1"
    if type_code in ("canonical", "uri", "url", "oid", "uuid"):
        return "http://example.org/u1", "http://example.org/u1"
    if type_code in ("Coding",):
        return dict(CODING), "http://example.org/cs|c1"
    if type_code == "CodeableConcept":
        return {"coding": [dict(CODING)], "text": "Alpha"}, (
            "http://example.org/cs|c1" if kind == "token" else "alp"
        )
    if type_code == "Identifier":
        return {"system": "http://example.org/id", "value": "v1"}, "http://example.org/id|v1"
    if type_code == "ContactPoint":
        return {"system": "email", "value": "a@example.org"}, "a@example.org"
    if type_code == "boolean":
        return True, "true"
    if type_code in ("string", "markdown", "id"):
        return "Alpha", ("alp" if kind == "string" else "Alpha")
    if type_code in ("date", "dateTime", "instant"):
        return "2020-01-02", "2020-01"
    if type_code == "Period":
        return {"start": "2020-01-02", "end": "2020-01-03"}, "2020-01"
    if type_code == "Timing":
        return {"event": ["2020-01-02"]}, "2020-01"
    if type_code in ("integer", "decimal", "positiveInt", "unsignedInt"):
        return 5, "ge4"
    if type_code in ("Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity"):
        q = {"value": 5, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
        return q, "ge4"
    if type_code == "Money":
        return {"value": 5, "currency": "USD"}, "ge4"
    if type_code == "Range":
        return {"low": {"value": 4}, "high": {"value": 6}}, "ge4"
    if type_code == "HumanName":
        return {"family": "Alpha", "given": ["Beta"]}, "alp"
    if type_code == "Address":
        return {"line": ["Alpha"], "city": "Alpha", "text": "Alpha"}, "alp"
    if type_code == "code":
        return None  # resolved by the caller (bound codes)
    return None


def _choose(types: tuple[str, ...], kind: str, wanted: str | None) -> str | None:
    if wanted:
        return wanted if wanted in types else None
    preferences = {
        "date": ("dateTime", "Period", "date", "instant", "Timing"),
        "token": ("CodeableConcept", "Coding", "code", "boolean", "Identifier", "string"),
        "reference": ("Reference", "canonical", "uri"),
        "quantity": ("Quantity", "Range", "Money"),
        "number": ("decimal", "integer", "Range", "Quantity"),
        "string": ("string", "markdown", "HumanName", "Address"),
        "uri": ("uri", "url", "canonical"),
    }.get(kind, ())
    for t in preferences:
        if t in types:
            return t
    return types[0] if types else None


def build(param: SearchParam) -> tuple[dict[str, Any], str] | None:
    """A resource holding a value for the parameter, and the search value that finds it."""
    rtype = param.resource_type
    if (rtype, param.code) in SPECIAL_CASES:
        extra, value = SPECIAL_CASES[(rtype, param.code)]
        return {"resourceType": rtype, "id": "m", **extra}, value
    assert param.expression
    steps = _parse_member(split_union(param.expression)[0], rtype)
    if steps is None:
        return None
    resource: dict[str, Any] = {"resourceType": rtype, "id": "m"}
    out = _fill(resource, rtype, steps, param)
    if out is None:
        return None
    return resource, out


def _fill(node: dict[str, Any], path: str, steps: list[_Step], param: SearchParam) -> str | None:
    info = registry.types()
    i = 0
    while i < len(steps) and steps[i].kind != "name":
        if steps[i].kind == "equals":
            node[steps[i].arg] = steps[i].value
        i += 1
    if i == len(steps):
        return None
    step = steps[i]
    rest = steps[i + 1 :]
    if step.kind != "name":
        return None
    kids = info.children(path)
    el = kids.get(step.arg)
    choice = False
    if el is None:
        el = kids.get(step.arg + "[x]")
        choice = True
        if el is None:
            return None
    filters = []
    j = 0
    while j < len(rest) and rest[j].kind != "name" and rest[j].kind != "extension":
        filters.append(rest[j])
        j += 1
    after = rest[j:]
    cast = next((f.arg for f in filters if f.kind == "type"), None)
    target = next((f.arg for f in filters if f.kind == "resolve"), None)
    kind = param.type if not after else ""
    if el.content_reference:
        type_code: str | None = "BackboneElement"
    elif choice or len(el.types) > 1:
        type_code = _choose(el.types, kind, cast)
    else:
        type_code = el.types[0]
    if type_code is None:
        return None
    key = step.arg + (type_code[0].upper() + type_code[1:] if choice else "")
    child_path = el.content_reference or info.node_path(el, type_code)
    if after:
        child: dict[str, Any] = {}
        for f in filters:
            if f.kind == "equals":
                child[f.arg] = f.value
        if after[0].kind == "extension":
            ext = {"url": after[0].arg}
            child.setdefault("extension", []).append(ext)
            value = _fill(ext, "Extension", [_Step("name", "value")] + after[1:], param)
        else:
            value = _fill(child, child_path, after, param)
        if value is None:
            return None
        node[key] = [child] if el.is_list else child
        return value
    if type_code == "code":
        codes = info.codes(el.binding) if el.binding else None
        leaf: Any = codes[0] if codes else "c1"
        value = leaf
    else:
        targets = el.target_types
        made = _leaf(type_code, param, target or (targets[0] if targets else None))
        if made is None:
            return None
        leaf, value = made
    if isinstance(leaf, dict):
        for f in filters:
            if f.kind == "equals":
                leaf[f.arg] = f.value
    node[key] = [leaf] if el.is_list else leaf
    return value


def _pairs() -> list[SearchParam]:
    out = []
    for rtype in registry.resource_types():
        for _code, p in sorted(registry.R4.params(rtype).items()):
            if p.supported and p.type != "composite" and not embeds_resources(p):
                out.append(p)
    return out


PAIRS = _pairs()


@pytest.mark.parametrize("param", PAIRS, ids=[f"{p.resource_type}-{p.code}" for p in PAIRS])
def test_declared_parameter_finds_what_its_expression_reads(param: SearchParam) -> None:
    built = build(param)
    assert built is not None, f"cannot build a {param.resource_type} for {param.expression}"
    resource, value = built
    query = parse_query(param.resource_type, [(param.code, value)])
    (crit,) = query.criteria
    assert matches(resource, crit), f"{param.code}={value} does not find {resource}"
    empty = {"resourceType": param.resource_type, "id": "e"}
    assert not matches(empty, crit), f"{param.code}={value} finds a resource without it"


COMPOSITES = [
    p
    for rtype in registry.resource_types()
    for p in registry.R4.params(rtype).values()
    if p.type == "composite"
]


def test_every_composite_names_known_components() -> None:
    assert COMPOSITES
    for p in COMPOSITES:
        for comp in p.components:
            assert registry.R4.by_url(comp.definition), (p.url, comp.definition)


def test_pairs_cover_the_declared_parameters() -> None:
    declared = {
        (t, c)
        for t in registry.resource_types()
        for c, p in registry.R4.params(t).items()
        if p.supported
    }
    covered = {(p.resource_type, p.code) for p in PAIRS} | {
        (p.resource_type, p.code) for p in COMPOSITES
    }
    assert declared - covered == {("Bundle", "composition"), ("Bundle", "message")}
