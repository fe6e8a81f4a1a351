"""Who is calling and what they may do: `AuthContext` and the authorization decisions.

A request is allowed when at least one granted resource scope covers the resource type
and the permission letter, and that scope's own limits hold:

- ``user/`` and ``system/`` scopes: no compartment limit (fhircare has no per-user ACL;
  a ``user/`` scope reaches every resource of the type).
- ``patient/`` scopes: need a patient in context; resources of compartment types must be
  in that patient's R4 compartment; `SHARED_TYPES` (Medication, Practitioner,
  Questionnaire...) may be read and searched but not written; every other type (Task,
  Device, Bundle...) is denied.
- v2 query suffixes (``?category=...``): evaluated on the resource for token parameters
  that name a top-level element (``category``, ``code``, ``status``, ``clinical-status``...);
  anything else fails closed.

``resource=None`` makes `authorize` a type-level pre-check only: every read, vread,
history entry, create, update (old and new version) and delete must be authorized again
with the resource itself. Searches use `search_guard` (parameters to AND in, then
`SearchGuard.allows` on every returned resource, included ones too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fhircare.fhir.errors import Forbidden
from fhircare.security.compartment import (
    PATIENT_COMPARTMENT,
    SHARED_TYPES,
    compartment_search_params,
    in_compartment,
    patient_id_of,
)
from fhircare.security.scopes import Scope, ScopeSet, check, required

_FHIR_USER_PATIENT = re.compile(r"(?:^|/)Patient/(?P<id>[A-Za-z0-9\-.]{1,64})$")


@dataclass(frozen=True)
class AuthContext:
    """The authenticated caller of one request."""

    subject: str | None
    client_id: str | None
    scopes: ScopeSet = field(default_factory=ScopeSet)
    patient: str | None = None  # patient id from the launch context
    fhir_user: str | None = None  # e.g. "Practitioner/123"
    encounter: str | None = None

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> AuthContext:
        """Build from verified access-token claims.

        scope: ``scope`` (space-separated) or ``scp`` (list); client: ``client_id`` or
        ``azp``; patient: ``patient`` claim, else the ``fhirUser`` when it is a Patient.
        """
        raw_scope = claims.get("scope", claims.get("scp"))
        fhir_user = _str(claims.get("fhirUser"))
        patient = _patient_id(_str(claims.get("patient")))
        if patient is None and fhir_user:
            m = _FHIR_USER_PATIENT.search(fhir_user)
            patient = m["id"] if m else None
        return cls(
            subject=_str(claims.get("sub")),
            client_id=_str(claims.get("client_id")) or _str(claims.get("azp")),
            scopes=ScopeSet.parse(raw_scope if isinstance(raw_scope, str | list) else None),
            patient=patient,
            fhir_user=fhir_user,
            encounter=_str(claims.get("encounter")),
        )

    @classmethod
    def unrestricted(cls, subject: str = "anonymous") -> AuthContext:
        """Full access, for ``FHIRCARE_AUTH=none`` and internal jobs."""
        return cls(subject=subject, client_id=None, scopes=ScopeSet.parse("system/*.cruds"))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _patient_id(value: str | None) -> str | None:
    if value is None:
        return None
    if "/" in value:
        return patient_id_of(value)
    return value


def _camel(name: str) -> str:
    head, *rest = name.split("-")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _codings(value: Any) -> list[tuple[str | None, str | None]]:
    """(system, code) pairs of a code, Coding, CodeableConcept or a list of them."""
    if isinstance(value, list):
        return [pair for item in value for pair in _codings(item)]
    if isinstance(value, str):
        return [(None, value)]
    if isinstance(value, dict):
        if "coding" in value:
            return _codings(value["coding"])
        if "code" in value or "system" in value:
            return [(value.get("system"), value.get("code"))]
    return []


def _token_matches(expected: str, codings: list[tuple[str | None, str | None]]) -> bool:
    for alternative in expected.split(","):
        if "|" in alternative:
            system, code = alternative.split("|", 1)
            for s, c in codings:
                if (
                    (system == "" and s is None and c == code)
                    or (code == "" and s == system)
                    or (system != "" and s == system and c == code)
                ):
                    return True
        elif any(c == alternative for _, c in codings):
            return True
    return False


def query_matches(query: tuple[tuple[str, str], ...], resource: dict[str, Any]) -> bool:
    """True when the resource satisfies every token parameter of a v2 scope query."""
    for name, expected in query:
        if ":" in name or name.startswith("_"):
            return False  # modifiers and special parameters are not evaluated: fail closed
        element = resource.get(_camel(name))
        if element is None or not _token_matches(expected, _codings(element)):
            return False
    return True


def _denial(
    ctx: AuthContext,
    scope: Scope,
    resource_type: str,
    letter: str,
    resource: dict[str, Any] | None,
) -> str | None:
    """Why `scope` does not allow this request, or None when it does."""
    if scope.level == "patient":
        if ctx.patient is None:
            return f"scope {scope.raw} needs a patient in the launch context"
        if resource_type in SHARED_TYPES:
            if letter not in "rs":
                return f"patient-level scopes cannot modify {resource_type}"
        elif resource_type not in PATIENT_COMPARTMENT:
            return (
                f"{resource_type} is not in the FHIR R4 patient compartment; "
                "patient-level scopes cannot reach it (use a user/ or system/ scope)"
            )
        elif resource is not None and not in_compartment(resource, ctx.patient):
            return "resource is outside the patient compartment of the token"
    if scope.query and resource is not None and not query_matches(scope.query, resource):
        return f"resource does not match the query of scope {scope.raw}"
    return None


def authorize(
    ctx: AuthContext,
    resource_type: str,
    interaction: str,
    *,
    resource: dict[str, Any] | None = None,
) -> None:
    """Allow the interaction or raise Forbidden saying why.

    With `resource` given the decision is final (compartment and query limits applied);
    without it only the type-level part is decided (a pre-check before loading data).
    """
    letter = required(interaction)
    scopes = check(ctx.scopes, resource_type, interaction)
    reasons = []
    for scope in scopes:
        reason = _denial(ctx, scope, resource_type, letter, resource)
        if reason is None:
            return
        reasons.append(reason)
    raise Forbidden(reasons[0])


def allowed(
    ctx: AuthContext,
    resource: dict[str, Any],
    interaction: str = "read",
) -> bool:
    """True when `authorize` would pass for this resource (for filtering result lists)."""
    try:
        authorize(ctx, resource.get("resourceType", ""), interaction, resource=resource)
    except Forbidden:
        return False
    return True


@dataclass(frozen=True)
class SearchGuard:
    """Restrictions for one search: parameters to AND in, and a filter for results."""

    ctx: AuthContext
    resource_type: str
    params: tuple[tuple[str, str], ...] = ()
    unrestricted: bool = False

    def allows(self, resource: dict[str, Any]) -> bool:
        """True when a result (match, _include/_revinclude, history entry) may be returned.

        Matches of the searched type need the search permission; other types (included
        resources) need read.
        """
        same_type = resource.get("resourceType") == self.resource_type
        if self.unrestricted and same_type:
            return True
        interaction = "search-type" if same_type else "read"
        return allowed(self.ctx, resource, interaction)


def search_guard(
    ctx: AuthContext, resource_type: str, interaction: str = "search-type"
) -> SearchGuard:
    """The guard for a type-level search or history; raises Forbidden when none is allowed.

    `params` narrows the search at the store (compartment and single-scope query limits);
    the results must still be filtered with `SearchGuard.allows`.
    """
    letter = required(interaction)
    scopes = check(ctx.scopes, resource_type, interaction)
    usable = [s for s in scopes if _denial(ctx, s, resource_type, letter, None) is None]
    if not usable:
        raise Forbidden(_denial(ctx, scopes[0], resource_type, letter, None) or "forbidden")
    if any(s.level != "patient" and not s.query for s in usable):
        return SearchGuard(ctx, resource_type, (), unrestricted=True)
    params: list[tuple[str, str]] = []
    if (
        all(s.level == "patient" for s in usable)
        and resource_type in PATIENT_COMPARTMENT
        and ctx.patient
    ):
        params += compartment_search_params(resource_type, ctx.patient)
    if len(usable) == 1 and usable[0].query:
        params += usable[0].query
    return SearchGuard(ctx, resource_type, tuple(params))
