"""Who is calling: `AuthContext`, and which scopes can grant what at type level.

A request is allowed when at least one granted resource scope covers the resource type
and the permission letter, and that scope's own limits hold:

- ``user/`` and ``system/`` scopes: no compartment limit (fhircare has no per-user ACL;
  a ``user/`` scope reaches every resource of the type).
- ``patient/`` scopes: need a patient in context; resources of compartment types must be
  in that patient's R4 compartment; `SHARED_TYPES` (Medication, Practitioner,
  Questionnaire...) may be read and searched but not written; every other type (Task,
  Device, Bundle...) is denied.
- v2 query suffixes (``?category=...``) narrow what a scope reaches.

This module decides the type-level part (`type_denial`); what each scope reaches, and the
checks on each resource read, searched or written, are `fhircare.security.policy`'s, and
the gate (`fhircare.security.gate`) applies them to every store access.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fhircare.security.compartment import PATIENT_COMPARTMENT, SHARED_TYPES, patient_id_of
from fhircare.security.scopes import Scope, ScopeSet

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


def type_denial(ctx: AuthContext, scope: Scope, resource_type: str, letter: str) -> str | None:
    """Why `scope` cannot grant `letter` on the type at all, or None when it can (what it
    then reaches, a compartment and a query, is `fhircare.security.policy`'s business)."""
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
    return None
