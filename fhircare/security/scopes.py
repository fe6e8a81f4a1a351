"""SMART on FHIR scopes (App Launch v1 and v2): parsing and interaction decisions.

Resource scopes look like ``<level>/<type>.<permissions>[?<query>]`` where level is
``patient``, ``user`` or ``system``, type is a resource type or ``*``, and permissions are
v2 letters in the order ``cruds`` (``rs``, ``cu``, ``cruds``) or the v1 words ``read``,
``write`` and ``*``. v1 ``read`` grants ``rs``; ``write`` grants ``cud``; ``*`` grants all.

A v2 query suffix (``patient/Observation.rs?category=...|laboratory``) is kept on the
parsed scope; `fhircare.security.context` enforces it for token parameters it can
evaluate and fails closed otherwise. Scopes that are not resource scopes (``openid``,
``fhirUser``, ``launch/patient``, ``offline_access``...) are kept in `ScopeSet.other`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl

from fhircare.fhir.errors import Forbidden

Level = Literal["patient", "user", "system"]
LEVELS: tuple[Level, ...] = ("patient", "user", "system")
PERMISSION_ORDER = "cruds"

_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE_RE = re.compile(
    r"^(?P<level>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{1,63})"
    r"\.(?P<perms>read|write|\*|[cruds]{1,5})(?:\?(?P<query>.+))?$"
)

# FHIR interaction (http://hl7.org/fhir/restful-interaction) -> SMART v2 permission letter
_INTERACTION_LETTER: dict[str, str] = {
    "create": "c",
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "search": "s",
    "search-type": "s",
    "history-type": "s",
}


def required(interaction: str) -> str:
    """The SMART v2 permission letter an interaction needs.

    c=create, r=read/vread/history-instance, u=update/patch, d=delete,
    s=search/search-type/history-type. Raises ValueError for anything else (system-level
    search/history, transaction, operations): the caller decides those per entry/operation.
    """
    try:
        return _INTERACTION_LETTER[interaction]
    except KeyError:
        raise ValueError(f"no SMART permission defined for interaction {interaction!r}") from None


@dataclass(frozen=True)
class Scope:
    """One parsed SMART resource scope."""

    level: Level
    resource_type: str  # a resource type or "*"
    permissions: frozenset[str]
    query: tuple[tuple[str, str], ...] = ()
    raw: str = ""

    def grants(self, resource_type: str, letter: str) -> bool:
        """True when this scope covers the type and the permission letter."""
        return letter in self.permissions and self.resource_type in ("*", resource_type)


def parse_scope(text: str) -> Scope | None:
    """Parse one resource scope; None when `text` is not a well-formed resource scope."""
    m = _SCOPE_RE.match(text)
    if m is None:
        return None
    perms = m["perms"]
    if perms in _V1_PERMISSIONS:
        letters = _V1_PERMISSIONS[perms]
    else:
        # v2: letters must be distinct and in the order c, r, u, d, s
        positions = [PERMISSION_ORDER.index(ch) for ch in perms]
        if positions != sorted(set(positions)):
            return None
        letters = perms
    query: tuple[tuple[str, str], ...] = ()
    if m["query"] is not None:
        pairs = parse_qsl(m["query"], keep_blank_values=True, strict_parsing=False)
        if not pairs or any(not k or not v for k, v in pairs):
            return None
        query = tuple(pairs)
    return Scope(m["level"], m["type"], frozenset(letters), query, text)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ScopeSet:
    """The scopes granted to a token, split into resource scopes and the rest."""

    resource: tuple[Scope, ...] = ()
    other: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, scopes: str | Iterable[str] | None) -> ScopeSet:
        """Parse a space-separated scope string (or a list of scope strings)."""
        if scopes is None:
            items: list[str] = []
        elif isinstance(scopes, str):
            items = scopes.split()
        else:
            items = [s for chunk in scopes for s in str(chunk).split()]
        resource: list[Scope] = []
        other: set[str] = set()
        for item in items:
            parsed = parse_scope(item)
            if parsed is not None:
                resource.append(parsed)
            else:
                other.add(item)
        return cls(tuple(resource), frozenset(other))

    def granting(self, resource_type: str, letter: str) -> list[Scope]:
        """Every resource scope that grants `letter` on `resource_type`."""
        return [s for s in self.resource if s.grants(resource_type, letter)]

    def allows(self, resource_type: str, interaction: str) -> bool:
        """True when some scope (at any level, ignoring query limits) grants the interaction."""
        return bool(self.granting(resource_type, required(interaction)))

    def __str__(self) -> str:
        return " ".join([s.raw for s in self.resource] + sorted(self.other))


def missing_scope_message(resource_type: str, letter: str) -> str:
    """The diagnostics for a missing scope, e.g. 'requires scope patient/CarePlan.r ...'."""
    v1 = "write" if letter in "cud" else "read"
    return f"requires scope patient/{resource_type}.{letter} (or user/, system/; SMART v1: .{v1})"


def check(granted: ScopeSet, resource_type: str, interaction: str) -> list[Scope]:
    """The scopes granting the interaction; raises Forbidden naming the missing scope."""
    letter = required(interaction)
    scopes = granted.granting(resource_type, letter)
    if not scopes:
        raise Forbidden(missing_scope_message(resource_type, letter))
    return scopes
