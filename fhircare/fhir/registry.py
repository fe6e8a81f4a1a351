"""The FHIR R4 registry: resource types, elements, SearchParameters, compartments, operations.

Everything here comes from the official `hl7.fhir.r4.core` 4.0.1 package through
`r4/registry.json.gz` (built by `scripts/build-fhir-registry`; see `r4/README.md`). Nothing
about types, parameters or compartments is typed in by hand.

`R4` is the registry of the specification. A store that indexes SearchParameter resources
(the embedded store) keeps a `SearchRegistry` of its own: the specification's parameters
plus the active SearchParameters it holds, so adding a parameter is data, not code.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources as importlib_resources
from typing import Any

PARAM_TYPES = ("number", "date", "string", "token", "reference", "composite", "quantity", "uri")
SPECIAL_TYPE = "special"
# Types that are Resources but not DomainResources (no text, contained, extension).
NOT_DOMAIN = frozenset({"Bundle", "Binary", "Parameters"})


@cache
def _data() -> dict[str, Any]:
    raw = importlib_resources.files("fhircare.fhir").joinpath("r4/registry.json.gz").read_bytes()
    return json.loads(gzip.decompress(raw))


@dataclass(frozen=True)
class Component:
    """One part of a composite parameter: the parameter it uses and its relative expression."""

    definition: str  # url of the component's SearchParameter
    expression: str


@dataclass(frozen=True)
class SearchParam:
    """A search parameter as it applies to one resource type."""

    code: str
    type: str  # number | date | string | token | reference | composite | quantity | uri | special
    url: str
    resource_type: str
    expression: str | None  # the FHIRPath expression for this resource type
    targets: tuple[str, ...] = ()
    modifiers: tuple[str, ...] = ()
    comparators: tuple[str, ...] = ()
    chains: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    custom: bool = False  # from a SearchParameter resource, not the specification

    @property
    def supported(self) -> bool:
        """False for parameters fhircare cannot evaluate (special, or no expression)."""
        if self.type == SPECIAL_TYPE or not self.expression:
            return False
        return self.type in PARAM_TYPES


@dataclass(frozen=True)
class Element:
    """The facts of one element definition (path, types, cardinality, binding)."""

    path: str
    types: tuple[str, ...]
    min: int
    max: str
    summary: bool
    binding: str | None  # required ValueSet url
    content_reference: str | None
    target_types: tuple[str, ...] = ()

    @property
    def is_list(self) -> bool:
        return self.max != "1"


class TypeInfo:
    """Element definitions and value sets of the R4 types (resources and datatypes)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._types: dict[str, Any] = data["types"]
        self._valuesets: dict[str, Any] = data["valuesets"]
        self.primitives: dict[str, str] = data["primitives"]
        self._elements: dict[str, Element] = {}
        self._lock = threading.Lock()

    def kind(self, type_name: str) -> str | None:
        t = self._types.get(type_name)
        return None if t is None else t["kind"]

    def element(self, path: str) -> Element | None:
        """The element at a full path ('Patient.contact.name', 'HumanName.family')."""
        found = self._elements.get(path)
        if found is not None:
            return found
        type_name = path.split(".", 1)[0]
        facts = self._types.get(type_name, {}).get("elements", {}).get(path)
        if facts is None:
            return None
        el = Element(
            path=path,
            types=tuple(facts["t"]),
            min=facts["min"],
            max=facts["max"],
            summary=bool(facts.get("s")),
            binding=facts.get("b"),
            content_reference=facts.get("cr"),
            target_types=tuple(dict.fromkeys(facts.get("tp") or ())),
        )
        self._elements[path] = el
        return el

    @cache  # noqa: B019 - one instance per process
    def children(self, path: str) -> Mapping[str, Element]:
        """The child elements of a type or backbone path, by name ('value[x]' kept as is)."""
        type_name = path.split(".", 1)[0]
        prefix = path + "."
        out: dict[str, Element] = {}
        for epath in self._types.get(type_name, {}).get("elements", {}):
            if epath.startswith(prefix) and "." not in epath[len(prefix) :]:
                el = self.element(epath)
                assert el is not None
                out[epath[len(prefix) :]] = el
        return out

    def child(self, path: str, name: str) -> tuple[Element, str] | None:
        """The element a JSON property names under `path`, and the type it has.

        `valueQuantity` under an element `value[x]` gives (value[x], 'Quantity').
        """
        kids = self.children(path)
        el = kids.get(name)
        if el is not None:
            return el, (el.types[0] if len(el.types) == 1 else "")
        for i in range(1, len(name)):
            if name[i].isupper():
                stem, suffix = name[:i], name[i:]
                choice = kids.get(stem + "[x]")
                if choice is not None:
                    for t in choice.types:
                        if t[0].upper() + t[1:] == suffix:
                            return choice, t
        return None

    def node_path(self, element: Element, type_code: str) -> str:
        """The path whose children describe a value of this element: the backbone path
        for BackboneElement/Element, the referenced path, or the datatype's name."""
        if element.content_reference:
            return element.content_reference
        if type_code in ("BackboneElement", "Element") or (
            not type_code and element.types and element.types[0] in ("BackboneElement", "Element")
        ):
            return element.path
        return type_code

    def codes(self, valueset: str) -> tuple[str, ...] | None:
        vs = self._valuesets.get(valueset.split("|")[0])
        return None if vs is None else tuple(vs["codes"])

    def code_system(self, valueset: str) -> str | None:
        vs = self._valuesets.get(valueset.split("|")[0])
        return None if vs is None else vs.get("system")


class SearchRegistry:
    """Search parameters by resource type and code: the specification's, plus custom ones."""

    def __init__(self, base: SearchRegistry | None = None) -> None:
        self._base = base
        self._lock = threading.RLock()
        self._own: dict[str, dict[str, SearchParam]] = {}  # type -> code -> param
        self._by_url: dict[str, list[SearchParam]] = {}
        self._custom_sources: dict[str, list[SearchParam]] = {}  # SearchParameter id -> params
        self.version = 0

    # ---- lookup -----------------------------------------------------------------------------

    def params(self, resource_type: str) -> dict[str, SearchParam]:
        """Every parameter of a type (custom ones replace specification ones of the same code)."""
        out = dict(self._base.params(resource_type)) if self._base else {}
        out.update(self._own.get(resource_type, {}))
        return out

    def param(self, resource_type: str, code: str) -> SearchParam | None:
        own = self._own.get(resource_type, {}).get(code)
        if own is not None:
            return own
        return self._base.param(resource_type, code) if self._base else None

    def by_url(self, url: str) -> list[SearchParam]:
        found = self._by_url.get(url, [])
        if not found and self._base:
            return self._base.by_url(url)
        return found

    # ---- building ---------------------------------------------------------------------------

    def _add(self, param: SearchParam) -> None:
        self._own.setdefault(param.resource_type, {})[param.code] = param
        self._by_url.setdefault(param.url, []).append(param)

    def add_definition(self, sp: dict[str, Any], *, custom: bool) -> list[SearchParam]:
        """Register a SearchParameter (registry entry or resource) for each of its bases."""
        made = [p for p in params_from_definition(sp, custom=custom)]
        with self._lock:
            for p in made:
                self._add(p)
            self.version += 1
        return made

    def custom_ids(self) -> list[str]:
        """The ids of the stored SearchParameters registered (`set_custom`)."""
        with self._lock:
            return list(self._custom_sources)

    def set_custom(self, resource_id: str, sp: dict[str, Any] | None) -> set[str]:
        """Replace the parameters a stored SearchParameter defines (None or a retired one
        removes them). Returns the resource types whose parameters changed."""
        with self._lock:
            changed: set[str] = set()
            for old in self._custom_sources.pop(resource_id, []):
                changed.add(old.resource_type)
                type_params = self._own.get(old.resource_type, {})
                if type_params.get(old.code) is old:
                    del type_params[old.code]
                urls = self._by_url.get(old.url, [])
                if old in urls:
                    urls.remove(old)
            if sp is not None and sp.get("status") in ("active", "draft"):
                made = params_from_definition(sp, custom=True)
                for p in made:
                    self._add(p)
                    changed.add(p.resource_type)
                self._custom_sources[resource_id] = made
            self.version += 1
            return changed


def _bases(base: Iterable[str], resource_types: Iterable[str]) -> list[str]:
    out: list[str] = []
    for b in base:
        if b == "Resource":
            out.extend(resource_types)
        elif b == "DomainResource":
            out.extend(t for t in resource_types if t not in NOT_DOMAIN)
        else:
            out.append(b)
    return list(dict.fromkeys(out))


def params_from_definition(sp: dict[str, Any], *, custom: bool) -> list[SearchParam]:
    """One SearchParam per resource type a SearchParameter (registry form or resource) has."""
    expressions: dict[str, str] = sp.get("expressions") or {}
    whole = sp.get("expression")
    out = []
    types = resource_types()
    for base in sp.get("base") or []:
        for rtype in _bases([base], types):
            if base in ("Resource", "DomainResource"):
                expr = (expressions.get(base) or whole or "").replace(f"{base}.", f"{rtype}.")
            else:
                expr = expressions.get(rtype) or _part_for(whole, rtype)
            out.append(
                SearchParam(
                    code=sp["code"],
                    type=sp["type"],
                    url=sp.get("url") or f"urn:fhircare:search-parameter:{sp.get('id')}",
                    resource_type=rtype,
                    expression=expr or None,
                    targets=tuple(sp.get("target") or ()),
                    modifiers=tuple(sp.get("modifier") or ()),
                    comparators=tuple(sp.get("comparator") or ()),
                    chains=tuple(sp.get("chain") or ()),
                    components=tuple(
                        Component(c["definition"], c["expression"])
                        for c in sp.get("component") or []
                    ),
                    custom=custom,
                )
            )
    return out


def _part_for(expression: str | None, rtype: str) -> str | None:
    """The union members of an expression that start with the type (all, if none names one)."""
    if not expression:
        return None
    from fhircare.fhir.fhirpath import split_union

    parts = split_union(expression)
    mine = [p for p in parts if p.lstrip("( ").split(".", 1)[0] == rtype]
    if mine:
        return " | ".join(mine)
    if any(p.lstrip("( ")[:1].isupper() and "." in p for p in parts):
        return None  # the expression names other types only
    return expression


# ---- the specification ---------------------------------------------------------------------


@cache
def resource_types() -> tuple[str, ...]:
    """Every R4 resource type (abstract Resource and DomainResource excluded)."""
    return tuple(_data()["resources"])


@cache
def _resource_type_set() -> frozenset[str]:
    return frozenset(resource_types())


def is_resource_type(name: str) -> bool:
    return name in _resource_type_set()


@cache
def types() -> TypeInfo:
    return TypeInfo(_data())


@cache
def r4b_model_types() -> frozenset[str]:
    """Resource types validated with their fhir.resources R4B model."""
    return frozenset(_data()["r4b_models_match"])


@cache
def r4b_only_elements() -> dict[str, tuple[str, ...]]:
    """Per type, the elements its R4B model has that R4 does not (refused)."""
    return {k: tuple(v) for k, v in _data()["r4b_only_elements"].items()}


@cache
def package() -> dict[str, Any]:
    return dict(_data()["package"])


def _build_r4() -> SearchRegistry:
    reg = SearchRegistry()
    for sp in _data()["search"]:
        for p in params_from_definition(sp, custom=False):
            reg._add(p)
    return reg


R4: SearchRegistry = _build_r4()


@dataclass(frozen=True)
class Compartment:
    """A CompartmentDefinition: which parameters put a resource of each type in it."""

    code: str  # Patient, Encounter, RelatedPerson, Practitioner, Device
    url: str
    params: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def types(self) -> tuple[str, ...]:
        return tuple(self.params)


@cache
def compartment(code: str) -> Compartment:
    """The compartment named by its type ('Patient'); KeyError for others."""
    c = _data()["compartments"][code]
    return Compartment(code, c["url"], {k: tuple(v) for k, v in c["resources"].items()})


def compartments() -> tuple[str, ...]:
    return tuple(_data()["compartments"])


@dataclass(frozen=True)
class OperationDef:
    code: str
    url: str
    resource: tuple[str, ...]
    system: bool
    type: bool
    instance: bool
    affects_state: bool


@cache
def operation_definitions() -> tuple[OperationDef, ...]:
    """The specification's OperationDefinitions for the operations fhircare implements."""
    return tuple(
        OperationDef(
            o["code"],
            o["url"],
            tuple(o["resource"]),
            o["system"],
            o["type"],
            o["instance"],
            o["affectsState"],
        )
        for o in _data()["operations"].values()
    )


def operation_definition(code: str, resource_type: str | None) -> OperationDef | None:
    """The official definition of `$code` on a type (or the system), if fhircare has it."""
    for op in operation_definitions():
        if op.code != code:
            continue
        if resource_type is None or resource_type in op.resource or "Resource" in op.resource:
            return op
    return None
