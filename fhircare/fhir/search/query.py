"""Parsing a FHIR search query into typed criteria, checked against the registry.

`parse_query` resolves every parameter name through a `SearchRegistry` and refuses what it
cannot evaluate with a 400 (unknown parameters name the valid ones, as HAPI does; unknown
or unsupported modifiers, bad values, ambiguous chains). With `lenient=True` unknown
parameters are skipped and reported in `Query.ignored` instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from fhircare.fhir import registry
from fhircare.fhir.errors import BadRequest
from fhircare.fhir.registry import SearchParam, SearchRegistry
from fhircare.fhir.search.values import date_range

# Result-shaping parameters handled by the caller (paging, includes, summaries, formats).
CONTROL_PARAMS = frozenset(
    {
        "_count",
        "_offset",
        "_include",
        "_include:iterate",
        "_include:recurse",
        "_revinclude",
        "_revinclude:iterate",
        "_revinclude:recurse",
        "_format",
        "_pretty",
        "_summary",
        "_total",
        "_totalMethod",
        "_elements",
        "_sort",
        "_getpages",
    }
)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
ORDERED = ("date", "number", "quantity")
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"text", "not", "of-type", "missing"},
    "reference": {"identifier", "missing"},
    "uri": {"above", "below", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "composite": {"missing"},
}
# Modifiers of the specification fhircare does not evaluate (they need a terminology server).
UNSUPPORTED_MODIFIERS = {"in", "not-in", "above", "below", "type", "iterate"}


@dataclass(frozen=True)
class Criterion:
    """One parameter's condition: any of `values` (OR) must hold."""

    param: SearchParam
    modifier: str | None
    values: tuple[str, ...]
    chain: Criterion | None = None  # for `ref:Type.param=x`: the condition on the target
    chain_type: str | None = None

    @property
    def name(self) -> str:
        return self.param.code


@dataclass(frozen=True)
class Has:
    """`_has:Type:ref:param=x`: resources that a matching `Type` points at through `ref`."""

    source_type: str
    reference: SearchParam
    criterion: Criterion | Has


@dataclass(frozen=True)
class InList:
    """`_list=id`: resources that the List points at."""

    list_id: str


@dataclass(frozen=True)
class SortKey:
    param: SearchParam
    descending: bool


@dataclass
class Query:
    resource_type: str
    criteria: list[Criterion | Has | InList] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # unknown names skipped (lenient)


def split_values(value: str, sep: str = ",") -> list[str]:
    """Split on `sep` not escaped with a backslash."""
    parts = re.split(rf"(?<!\\){re.escape(sep)}", value)
    return [p.replace("\\" + sep, sep) for p in parts]


# The DSTU1 comparators, which client-py (fhirclient) still sends for `$gt`/`$lt` and HAPI
# still reads: longest first.
SYMBOLS = ((">=", "ge"), ("<=", "le"), (">", "gt"), ("<", "lt"))


def split_prefix(value: str) -> tuple[str, str]:
    """('gt', '2020') from 'gt2020' (or the DSTU1 '>2020'); ('eq', value) without one."""
    if len(value) > 2 and value[:2] in PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    for symbol, prefix in SYMBOLS:
        if value.startswith(symbol) and len(value) > len(symbol):
            return prefix, value[len(symbol) :]
    return "eq", value


def _valid_names(reg: SearchRegistry, resource_type: str) -> str:
    supported = {code for code, p in reg.params(resource_type).items() if p.supported}
    names = sorted(supported | {"_has", "_list"})
    return ", ".join(names)


def unknown(reg: SearchRegistry, resource_type: str, name: str) -> BadRequest:
    return BadRequest(
        f'Unknown search parameter "{name}" for resource type "{resource_type}". '
        f"Valid search parameters for this search are: [{_valid_names(reg, resource_type)}]",
        code="not-supported",
    )


def parse_query(
    resource_type: str,
    params: Iterable[tuple[str, str]],
    *,
    registry_: SearchRegistry | None = None,
    lenient: bool = False,
) -> Query:
    """The criteria (ANDed) and sort keys of a search; BadRequest for what is refused."""
    reg = registry_ or registry.R4
    query = Query(resource_type)
    for raw_name, raw_value in params:
        if raw_name == "_sort":
            query.sort.extend(_sort_keys(reg, resource_type, raw_value))
            continue
        if raw_name in CONTROL_PARAMS:
            continue
        try:
            query.criteria.append(_criterion(reg, resource_type, raw_name, raw_value))
        except _Unknown as exc:
            if not lenient:
                raise unknown(reg, exc.resource_type, exc.name) from None
            query.ignored.append(raw_name)
    return query


class _Unknown(Exception):
    def __init__(self, resource_type: str, name: str) -> None:
        self.resource_type, self.name = resource_type, name


def _criterion(
    reg: SearchRegistry, resource_type: str, raw_name: str, raw_value: str
) -> Criterion | Has | InList:
    if raw_name == "_has" or raw_name.startswith("_has:"):
        return _has(reg, resource_type, raw_name, raw_value)
    if raw_name == "_list":
        if raw_value.startswith("$"):
            raise BadRequest(
                f"_list={raw_value}: functional lists are not supported", code="not-supported"
            )
        if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", raw_value):
            raise BadRequest(f"_list must be a List id, not {raw_value[:80]!r}", code="value")
        return InList(raw_value)
    return _param_criterion(reg, resource_type, raw_name, raw_value)


def _param_criterion(
    reg: SearchRegistry, resource_type: str, raw_name: str, raw_value: str
) -> Criterion:
    head, dot, rest = raw_name.partition(".")
    code, _, modifier_text = head.partition(":")
    modifier = modifier_text or None
    param = reg.param(resource_type, code)
    if param is None:
        raise _Unknown(resource_type, code)
    if not param.supported:
        raise BadRequest(
            f'Search parameter "{code}" ({param.type}) is not supported by this server',
            code="not-supported",
        )
    if dot:
        return _chain(reg, param, modifier, rest, raw_value, raw_name)
    modifier = _check_modifier(param, modifier)
    if modifier == "missing":
        if raw_value not in ("true", "false"):
            raise BadRequest(f"'{code}:missing' takes true or false, not {raw_value[:40]!r}")
        return Criterion(param, modifier, (raw_value,))
    values = tuple(split_values(raw_value))
    if any(v == "" for v in values):
        raise BadRequest(f"Empty value for search parameter '{raw_name}'", code="value")
    for v in values:
        check_value(param, modifier, v, reg)
    return Criterion(param, modifier, values)


def _check_modifier(param: SearchParam, modifier: str | None) -> str | None:
    if modifier is None:
        return None
    if param.type == "reference" and modifier not in MODIFIERS["reference"]:
        if not registry.is_resource_type(modifier):
            raise BadRequest(
                f"Unknown modifier ':{modifier}' on reference parameter '{param.code}'",
                code="value",
            )
        if param.targets and modifier not in param.targets:
            raise BadRequest(
                f"'{param.code}' cannot point at {modifier} "
                f"(its targets are {', '.join(param.targets)})",
                code="value",
            )
        return modifier
    allowed = MODIFIERS.get(param.type, {"missing"})
    if modifier in allowed:
        return modifier
    if modifier in UNSUPPORTED_MODIFIERS:
        raise BadRequest(
            f"The modifier ':{modifier}' is not supported by this server "
            f"(on '{param.code}', a {param.type} parameter)",
            code="not-supported",
        )
    raise BadRequest(
        f"Unknown modifier ':{modifier}' for the {param.type} parameter '{param.code}' "
        f"(valid: {', '.join(sorted(allowed))})",
        code="value",
    )


def _chain(
    reg: SearchRegistry,
    param: SearchParam,
    modifier: str | None,
    rest: str,
    raw_value: str,
    raw_name: str,
) -> Criterion:
    if param.type != "reference":
        raise BadRequest(
            f"'{raw_name}': only reference parameters can be chained ('{param.code}' is "
            f"{param.type})",
            code="value",
        )
    if modifier is not None and not registry.is_resource_type(modifier):
        raise BadRequest(f"'{raw_name}': a chain takes a resource type, not ':{modifier}'")
    inner_code = rest.partition(".")[0].partition(":")[0]
    if modifier:
        target = modifier
        if param.targets and target not in param.targets:
            raise BadRequest(
                f"'{param.code}' cannot point at {target} "
                f"(its targets are {', '.join(param.targets)})",
                code="value",
            )
    else:
        candidates = [
            t for t in (param.targets or registry.resource_types()) if reg.param(t, inner_code)
        ]
        if not candidates:
            raise BadRequest(
                f"'{raw_name}': no target of '{param.code}' "
                f"({', '.join(param.targets) or 'any type'}) has a parameter '{inner_code}'",
                code="not-supported",
            )
        if len(candidates) > 1:
            raise BadRequest(
                f"'{raw_name}' is ambiguous: '{param.code}' can point at "
                f"{', '.join(candidates)}, which all have '{inner_code}'; name the type, "
                f"as in {param.code}:{candidates[0]}.{rest}",
                code="value",
            )
        target = candidates[0]
    try:
        inner = _param_criterion(reg, target, rest, raw_value)
    except _Unknown as exc:
        raise unknown(reg, exc.resource_type, exc.name) from None
    return Criterion(param, None, (), chain=inner, chain_type=target)


def _has(reg: SearchRegistry, resource_type: str, raw_name: str, raw_value: str) -> Has:
    parts = raw_name.split(":", 3)
    if len(parts) != 4 or not all(parts[1:]):
        raise BadRequest(
            f"'{raw_name}': _has takes _has:Type:reference-parameter:parameter", code="value"
        )
    _, source_type, ref_code, inner_name = parts
    if not registry.is_resource_type(source_type):
        raise BadRequest(f"'{raw_name}': {source_type} is not a resource type", code="value")
    ref = reg.param(source_type, ref_code)
    if ref is None:
        raise unknown(reg, source_type, ref_code)
    if ref.type != "reference":
        raise BadRequest(f"'{raw_name}': {ref_code} is not a reference parameter", code="value")
    if ref.targets and resource_type not in ref.targets:
        raise BadRequest(
            f"'{raw_name}': {source_type}.{ref_code} cannot point at {resource_type}",
            code="value",
        )
    try:
        inner = _criterion(reg, source_type, inner_name, raw_value)
    except _Unknown as exc:
        raise unknown(reg, exc.resource_type, exc.name) from None
    if isinstance(inner, InList):
        raise BadRequest(f"'{raw_name}': _list cannot be used inside _has", code="value")
    return Has(source_type, ref, inner)


def check_value(param: SearchParam, modifier: str | None, value: str, reg: SearchRegistry) -> None:
    """Refuse a value that cannot be parsed for the parameter's type."""
    kind = param.type
    if kind == "composite":
        parts = split_values(value, "$")
        if len(parts) != len(param.components):
            raise BadRequest(
                f"'{param.code}' takes {len(param.components)} values separated by $, "
                f"not {value[:80]!r}",
                code="value",
            )
        for comp, part in zip(param.components, parts, strict=True):
            sub = next(iter(reg.by_url(comp.definition)), None)
            if sub is None:
                raise BadRequest(f"'{param.code}': unknown component {comp.definition}")
            check_value(sub, None, part, reg)
        return
    if kind not in ORDERED:
        return
    prefix, text = split_prefix(value)
    if kind == "date":
        try:
            date_range(text)
        except ValueError as exc:
            raise BadRequest(
                f"Invalid date value for '{param.code}': {value[:80]!r} (expected "
                "[prefix]YYYY[-MM[-DD[Thh:mm[:ss[.sss]][Z|+hh:mm]]]])",
                code="value",
            ) from exc
        return
    number = split_values(text, "|")[0] if kind == "quantity" else text
    try:
        d = Decimal(number)
    except InvalidOperation as exc:
        raise BadRequest(
            f"Invalid {kind} value for '{param.code}': {value[:80]!r}", code="value"
        ) from exc
    if not d.is_finite():
        raise BadRequest(f"Invalid {kind} value for '{param.code}': {value[:80]!r}", code="value")


def _sort_keys(reg: SearchRegistry, resource_type: str, value: str) -> list[SortKey]:
    keys: list[SortKey] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        desc = item.startswith("-")
        code = item.lstrip("-")
        param = reg.param(resource_type, code)
        if param is None:
            raise BadRequest(
                f'Unknown sort parameter "{code}" for resource type "{resource_type}". '
                f"Valid search parameters for this search are: "
                f"[{_valid_names(reg, resource_type)}]",
                code="not-supported",
            )
        if not param.supported or param.type == "composite":
            raise BadRequest(f"Sorting by '{code}' ({param.type}) is not supported")
        keys.append(SortKey(param, desc))
    return keys
