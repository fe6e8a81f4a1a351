"""Does a resource satisfy a criterion? Dispatch on the parameter's type, per the R4 rules.

Values come from the parameter's own expression (`fhircare.fhir.fhirpath`), so search,
compartment membership and includes all read one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from fhircare.fhir import registry
from fhircare.fhir.errors import BadRequest
from fhircare.fhir.fhirpath import (
    Typed,
    compile_expression,
    compile_nodes,
    compile_relative,
    final_elements,
)
from fhircare.fhir.registry import SearchParam, SearchRegistry
from fhircare.fhir.search import values as V
from fhircare.fhir.search.query import Criterion, split_prefix, split_values


@dataclass(frozen=True)
class RefIn:
    """A reference parameter pointing at one of `keys` ('Type/id'): resolved chains."""

    param: SearchParam
    keys: frozenset[str]


@dataclass(frozen=True)
class IdIn:
    """The resource's id is one of `ids`: resolved `_has` and `_list`."""

    ids: frozenset[str]


def extract(param: SearchParam, resource: dict[str, Any]) -> list[Typed]:
    """The values of a parameter in a resource."""
    if not param.expression:
        return []
    return compile_expression(param.expression, param.resource_type)(resource)


@lru_cache(maxsize=4096)
def implicit_system(param: SearchParam) -> str | None:
    """The code system of a `code` element bound (required) to a one-system value set, which
    HAPI also indexes codes with (so `gender=http://hl7.org/fhir/administrative-gender|male`
    matches)."""
    if not param.expression or param.type != "token":
        return None
    finals = final_elements(param.expression, param.resource_type)
    if not finals:
        return None
    info = registry.types()
    systems = set()
    for path, type_code in finals:
        el = info.element(path)
        if el is None or type_code != "code" or not el.binding:
            return None
        systems.add(info.code_system(el.binding))
    return systems.pop() if len(systems) == 1 else None


@lru_cache(maxsize=1024)
def embeds_resources(param: SearchParam) -> bool:
    """True for reference parameters whose values are resources (Bundle.entry[0].resource)."""
    if not param.expression:
        return False
    finals = final_elements(param.expression, param.resource_type) or ()
    return bool(finals) and all(t == "Resource" for _, t in finals)


def matches(
    resource: dict[str, Any],
    crit: Criterion | RefIn | IdIn,
    *,
    reg: SearchRegistry | None = None,
    base_url: str | None = None,
) -> bool:
    if isinstance(crit, IdIn):
        return resource.get("id") in crit.ids
    if isinstance(crit, RefIn):
        return any(k in crit.keys for k in V.references(extract(crit.param, resource)))
    if crit.chain is not None:  # a chain into the resources a parameter holds
        inner = crit.chain
        return any(
            isinstance(v, dict)
            and v.get("resourceType") == crit.chain_type
            and matches(v, inner, reg=reg, base_url=base_url)
            for _, v in extract(crit.param, resource)
        )
    if crit.param.type == "composite" and crit.modifier != "missing":
        return match_composite(crit, resource, reg or registry.R4)
    values = extract(crit.param, resource)
    return match_values(crit, values, reg=reg, base_url=base_url)


def match_values(
    crit: Criterion,
    values: list[Typed],
    *,
    reg: SearchRegistry | None = None,
    base_url: str | None = None,
) -> bool:
    param = crit.param
    kind = param.type
    if crit.modifier == "missing":
        present = bool(_present(kind, values))
        return present == (crit.values[0] == "false")
    if kind == "token":
        return _token(param, crit.modifier, crit.values, values)
    if kind == "reference":
        return _reference(param, crit.modifier, crit.values, values, base_url)
    if kind == "string":
        return _string(crit.modifier, crit.values, values)
    if kind == "date":
        ranges = V.dates(values)
        return any(_date(v, ranges) for v in crit.values)
    if kind == "number":
        nums = V.numbers(values)
        return any(_number(v, nums) for v in crit.values)
    if kind == "quantity":
        qs = V.quantities(values)
        return any(_quantity(v, qs) for v in crit.values)
    if kind == "uri":
        return _uri(crit.modifier, crit.values, values)
    if kind == "composite":
        raise AssertionError("composites are matched on the resource")  # pragma: no cover
    return False


def _present(kind: str, values: list[Typed]) -> list[Any]:
    if kind == "token":
        return V.tokens(values) or V.token_texts(values)
    if kind == "reference":
        return V.references(values) or V.reference_identifiers(values)
    if kind == "date":
        return V.dates(values)
    if kind == "string":
        return V.strings(values)
    if kind == "number":
        return V.numbers(values)
    if kind == "quantity":
        return V.quantities(values)
    return [v for _, v in values]


# ---- token ---------------------------------------------------------------------------------


def token_query(value: str) -> tuple[str | None, str | None]:
    """'sys|code' -> ('sys', 'code'); '|code' -> ('', 'code'); 'sys|' -> ('sys', None);
    'code' -> (None, 'code')."""
    parts = split_values(value, "|")
    if len(parts) == 1:
        return None, parts[0]
    system, code = parts[0], "|".join(parts[1:])
    return system, code or None


def _token(
    param: SearchParam, modifier: str | None, wanted: tuple[str, ...], values: list[Typed]
) -> bool:
    if modifier == "text":
        texts = [V.normalise(t) for t in V.token_texts(values)]
        return any(t.startswith(V.normalise(w)) for w in wanted for t in texts)
    if modifier == "of-type":
        found = V.identifier_types(values)
        for w in wanted:
            parts = split_values(w, "|")
            if len(parts) != 3:
                raise BadRequest(
                    f"'{param.code}:of-type' takes system|code|value, not {w[:80]!r}",
                    code="value",
                )
            if any((s or "") == parts[0] and c == parts[1] and v == parts[2] for s, c, v in found):
                return True
        return False
    pairs = V.tokens(values, implicit_system(param))
    hit = any(_token_hit(w, pairs) for w in wanted)
    return not hit if modifier == "not" else hit


def _token_hit(wanted: str, pairs: list[tuple[str | None, str]]) -> bool:
    system, code = token_query(wanted)
    for s, c in pairs:
        if system is None:
            if c == code:
                return True
        elif system == "":
            if not s and c == code:
                return True
        elif s == system and (code is None or c == code):
            return True
    return False


# ---- reference -----------------------------------------------------------------------------


def reference_keys(
    param: SearchParam, modifier: str | None, value: str, base_url: str | None
) -> list[str]:
    """The index keys a reference search value stands for."""
    if base_url and value.startswith(base_url.rstrip("/") + "/"):
        value = value[len(base_url.rstrip("/")) + 1 :]
    value = V.reference_key(value)
    if "/" in value or ":" in value:
        if modifier and "://" not in value and value.split("/")[0] != modifier:
            return []
        return [value]
    if modifier:
        return [f"{modifier}/{value}"]
    targets = param.targets or registry.resource_types()
    return [f"{t}/{value}" for t in targets]


def _reference(
    param: SearchParam,
    modifier: str | None,
    wanted: tuple[str, ...],
    values: list[Typed],
    base_url: str | None,
) -> bool:
    if modifier == "identifier":
        pairs = V.reference_identifiers(values)
        return any(_token_hit(w, pairs) for w in wanted)
    keys = set(V.references(values))
    return any(k in keys for w in wanted for k in reference_keys(param, modifier, w, base_url))


# ---- string and uri ------------------------------------------------------------------------


def _string(modifier: str | None, wanted: tuple[str, ...], values: list[Typed]) -> bool:
    found = V.strings(values)
    if modifier == "exact":
        return any(s == w for w in wanted for s in found)
    normal = [V.normalise(s) for s in found]
    if modifier == "contains":
        return any(V.normalise(w) in s for w in wanted for s in normal)
    return any(s.startswith(V.normalise(w)) for w in wanted for s in normal)


def _uri(modifier: str | None, wanted: tuple[str, ...], values: list[Typed]) -> bool:
    found = V.uris(values)
    if modifier == "below":
        return any(s.startswith(w) for w in wanted for s in found)
    if modifier == "above":
        return any(w.startswith(s) for w in wanted for s in found)
    return any(s == w for w in wanted for s in found)


# ---- date ----------------------------------------------------------------------------------


def _now_us() -> int:
    return V.micros(datetime.now(UTC))


def _date(value: str, ranges: list[tuple[int, int]]) -> bool:
    prefix, text = split_prefix(value)
    slo, shi = V.date_range_us(text)
    if prefix == "ap":
        gap = max(abs(_now_us() - slo) // 10, shi - slo)
        slo, shi = slo - gap, shi + gap
    for lo, hi in ranges:
        contained = lo >= slo and hi <= shi
        if (
            (prefix == "eq" and contained)
            or (prefix == "ne" and not contained)
            or (prefix == "gt" and hi > shi)
            or (prefix == "lt" and lo < slo)
            or (prefix == "ge" and (hi > shi or contained))
            or (prefix == "le" and (lo < slo or contained))
            or (prefix == "sa" and lo >= shi)
            or (prefix == "eb" and hi <= slo)
            or (prefix == "ap" and lo < shi and hi > slo)
        ):
            return True
    return False


# ---- number and quantity -------------------------------------------------------------------


def _precision_range(number: str) -> tuple[Decimal, Decimal, Decimal]:
    """(value, low, high) of a search number: '100' is [99.5, 100.5)."""
    d = Decimal(number)
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5) * Decimal(10) ** (exponent - 1)
    return d, d - half, d + half


def _compare(prefix: str, number: str, lo: Decimal, hi: Decimal) -> bool:
    v, plo, phi = _precision_range(number)
    if prefix == "eq":
        return lo >= plo and hi < phi
    if prefix == "ne":
        return not (lo >= plo and hi < phi)
    if prefix == "gt":
        return hi > v
    if prefix == "lt":
        return lo < v
    if prefix == "ge":
        return hi >= v
    if prefix == "le":
        return lo <= v
    if prefix == "sa":
        return lo > v
    if prefix == "eb":
        return hi < v
    if prefix == "ap":
        margin = abs(v) / 10
        return lo <= v + margin and hi >= v - margin
    return False


def _number(value: str, nums: list[tuple[Decimal, Decimal]]) -> bool:
    prefix, text = split_prefix(value)
    return any(_compare(prefix, text, lo, hi) for lo, hi in nums)


def _quantity(
    value: str, qs: list[tuple[Decimal, Decimal, str | None, str | None, str | None]]
) -> bool:
    prefix, text = split_prefix(value)
    parts = split_values(text, "|")
    number = parts[0]
    system = parts[1] if len(parts) > 1 else None
    code = "|".join(parts[2:]) if len(parts) > 2 else None
    for lo, hi, s, c, unit in qs:
        if system and s != system:
            continue
        if code and c != code and not (not system and unit == code):
            continue
        if _compare(prefix, number, lo, hi):
            return True
    return False


# ---- composite -----------------------------------------------------------------------------


def match_composite(crit: Criterion, resource: dict[str, Any], reg: SearchRegistry) -> bool:
    """Every component matches, on the same value of the composite's expression."""
    param = crit.param
    assert param.expression
    subs: list[SearchParam] = []
    for comp in param.components:
        sub = next(iter(reg.by_url(comp.definition)), None)
        if sub is None:
            return False
        subs.append(sub)
    nodes = compile_nodes(param.expression, param.resource_type)(resource)
    for wanted in crit.values:
        parts = split_values(wanted, "$")
        for value, path, _type in nodes:
            ok = True
            for comp, sub, part in zip(param.components, subs, parts, strict=True):
                found = compile_relative(comp.expression, path or "")(value)
                sub_crit = Criterion(sub, None, (part,))
                if not match_values(sub_crit, found, reg=reg):
                    ok = False
                    break
            if ok:
                return True
    return False


# ---- sorting -------------------------------------------------------------------------------


def sort_value(param: SearchParam, resource: dict[str, Any], descending: bool) -> Any:
    """The value a resource sorts by (None when it has none)."""
    values = extract(param, resource)
    kind = param.type
    if kind == "date":
        ranges = V.dates(values)
        if not ranges:
            return None
        return max(hi for _, hi in ranges) if descending else min(lo for lo, _ in ranges)
    if kind in ("number", "quantity"):
        nums = (
            V.numbers(values) if kind == "number" else [(q[0], q[1]) for q in V.quantities(values)]
        )
        if not nums:
            return None
        return max(hi for _, hi in nums) if descending else min(lo for lo, _ in nums)
    if kind == "string":
        found = sorted(V.normalise(s) for s in V.strings(values))
    elif kind == "token":
        found = sorted(c for _, c in V.tokens(values))
    elif kind == "reference":
        found = sorted(V.references(values))
    else:
        found = sorted(str(v) for _, v in values)
    if not found:
        return None
    return found[-1] if descending else found[0]
