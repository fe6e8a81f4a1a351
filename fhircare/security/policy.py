"""The caller's access policy: which resources each SMART scope reaches, for reads and writes.

An `AccessPolicy` turns the granted scopes into `Rule`s per (resource type, permission
letter). A rule is one scope's reach: the whole type (``user/``, ``system/``), or the
token patient's compartment (``patient/``), in both cases narrowed by the scope's own v2
query (``?category=...``). Several scopes combine as their union. The patient compartment
is the official R4 CompartmentDefinition (`fhircare.security.compartment`), and a scope
query is evaluated by the search engine itself (`fhircare.fhir.search`), so what a read
allows and what a search finds agree.

Writes by a patient-context scope are stricter than reads: the resource's Patient
compartment must hold the token's patient and no other patient (a CarePlan whose subject
is B is B's, whoever performs it), and a Patient can be neither created nor deleted; only
the token's own Patient may be updated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhircare.fhir import registry
from fhircare.fhir.errors import BadRequest, Forbidden
from fhircare.fhir.search import parse_query
from fhircare.fhir.search.match import matches
from fhircare.fhir.search.query import Criterion
from fhircare.security.compartment import (
    SHARED_TYPES,
    compartment_references,
    compartment_searches,
    in_compartment,
    patient_id_of,
)
from fhircare.security.context import AuthContext, type_denial
from fhircare.security.scopes import Scope, missing_scope_message, required

Resource = dict[str, Any]
Params = list[tuple[str, str]]
LETTERS = "cruds"


@dataclass(frozen=True)
class Rule:
    """One scope's reach over a type: a patient's compartment (or none) and a query."""

    scope: Scope
    patient: str | None  # confined to this patient's compartment (patient/ scopes)
    criteria: tuple[Criterion, ...]  # the scope's query, parsed

    @property
    def query(self) -> Params:
        return list(self.scope.query)


@cache
def _parsed(resource_type: str, query: tuple[tuple[str, str], ...]) -> tuple[Criterion, ...] | None:
    """A scope query as criteria the engine evaluates on one resource; None when it cannot
    (unknown parameter, chain, _has, _list): such a scope reaches nothing (fails closed)."""
    if not query:
        return ()
    try:
        parsed = parse_query(resource_type, list(query), registry_=registry.R4)
    except BadRequest:
        return None
    out: list[Criterion] = []
    for crit in parsed.criteria:
        if not isinstance(crit, Criterion) or crit.chain is not None:
            return None
        out.append(crit)
    return tuple(out) if not parsed.sort else None


def compartment_patients(resource: Resource, bases: Iterable[str] = ()) -> set[str]:
    """The patients whose compartment holds the resource: local ids, and for references to
    a Patient on another server the reference itself (never the token's patient)."""
    out: set[str] = set()
    if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
        out.add(resource["id"])
    for ref in compartment_references(resource):
        if "Patient/" not in ref:
            continue
        pid = patient_id_of(ref, bases)
        out.add(pid if pid is not None else f"foreign:{ref}")
    return out


class AccessPolicy:
    """What one caller (an `AuthContext`) may read, search and write."""

    def __init__(self, ctx: AuthContext, *, bases: Iterable[str] = ()) -> None:
        self.ctx = ctx
        self.bases = tuple(bases)
        self._rules: dict[tuple[str, str], list[Rule] | None | Forbidden] = {}
        self.unrestricted = any(
            s.level != "patient"
            and s.resource_type == "*"
            and not s.query
            and len(s.permissions) == 5
            for s in ctx.scopes.resource
        )

    # ---- rules ------------------------------------------------------------------------------

    def rules(self, resource_type: str, letter: str) -> list[Rule] | None:
        """The rules granting `letter` on the type; None: the whole type, unrestricted.
        Raises Forbidden (naming the missing scope) when no scope grants it."""
        key = (resource_type, letter)
        if key not in self._rules:
            try:
                self._rules[key] = self._build(resource_type, letter)
            except Forbidden as exc:
                self._rules[key] = exc
        found = self._rules[key]
        if isinstance(found, Forbidden):
            raise Forbidden(found.diagnostics)
        return found

    def _build(self, resource_type: str, letter: str) -> list[Rule] | None:
        scopes = self.ctx.scopes.granting(resource_type, letter)
        if not scopes:
            raise Forbidden(missing_scope_message(resource_type, letter))
        rules: list[Rule] = []
        reasons: list[str] = []
        for scope in scopes:
            reason = type_denial(self.ctx, scope, resource_type, letter)
            criteria = _parsed(resource_type, scope.query)
            if reason is None and criteria is None:
                reason = f"the query of scope {scope.raw} cannot be enforced"
            if reason is not None:
                reasons.append(reason)
                continue
            assert criteria is not None
            patient = self.ctx.patient if scope.level == "patient" else None
            if resource_type in SHARED_TYPES:
                patient = None  # definitions and directories: no patient data
            if patient is None and not criteria:
                return None
            rules.append(Rule(scope, patient, criteria))
        if not rules:
            raise Forbidden(reasons[0])
        return rules

    def whole_type(self, resource_type: str, letter: str) -> bool:
        """True when the caller reaches every resource of the type (no restriction)."""
        try:
            return self.rules(resource_type, letter) is None
        except Forbidden:
            return False

    # ---- reads ------------------------------------------------------------------------------

    def _reaches(self, rule: Rule, resource: Resource) -> bool:
        if rule.patient is not None and not in_compartment(
            resource, rule.patient, bases=self.bases
        ):
            return False
        return all(matches(resource, c, reg=registry.R4) for c in rule.criteria)

    def permits(self, resource: Resource, letter: str) -> bool:
        """True when the caller may `letter` (r or s) this resource."""
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            return False
        try:
            rules = self.rules(rtype, letter)
        except Forbidden:
            return False
        return rules is None or any(self._reaches(rule, resource) for rule in rules)

    def check_read(self, resource_type: str, letter: str, resource: Resource | None) -> None:
        """Raise Forbidden unless the caller may read (r) or search (s) the resource."""
        rules = self.rules(resource_type, letter)
        if rules is None or resource is None:
            return
        if any(self._reaches(rule, resource) for rule in rules):
            return
        if any(rule.patient is not None for rule in rules) and not any(
            in_compartment(resource, rule.patient, bases=self.bases)
            for rule in rules
            if rule.patient is not None
        ):
            raise Forbidden("resource is outside the patient compartment of the token")
        raise Forbidden(f"resource does not match the query of scope {rules[0].scope.raw}")

    def searches(self, resource_type: str, letter: str = "s") -> list[Params] | None:
        """The restriction of a search as alternatives to AND into it, one store query each
        (their union is what the caller may see); None: no restriction."""
        rules = self.rules(resource_type, letter)
        if rules is None:
            return None
        out: list[Params] = []
        for rule in rules:
            if rule.patient is None:
                alternatives = [rule.query]
            else:
                alternatives = [
                    alt + rule.query
                    for alt in compartment_searches("Patient", rule.patient, resource_type)
                ]
            out.extend(a for a in alternatives if a not in out)
        return out

    # ---- writes -----------------------------------------------------------------------------

    def check_write(
        self, resource_type: str, letter: str, resource: Resource | None, *, creating: bool = False
    ) -> None:
        """Raise Forbidden unless the caller may write (c, u, d) this version of a resource."""
        rules = self.rules(resource_type, letter)
        if rules is None:
            return
        if not isinstance(resource, dict):
            raise Forbidden(f"no {resource_type} to check against the scopes")
        reasons = [self._write_denial(rule, resource_type, resource, creating) for rule in rules]
        if any(reason is None for reason in reasons):
            return
        raise Forbidden(next(r for r in reasons if r is not None))

    def _write_denial(
        self, rule: Rule, resource_type: str, resource: Resource, creating: bool
    ) -> str | None:
        if rule.patient is not None:
            if resource_type == "Patient" and creating:
                return "a patient-context token cannot create a Patient"
            if resource_type == "Patient" and resource.get("id") != rule.patient:
                return "a patient-context token may change only its own Patient"
            patients = compartment_patients(resource, self.bases)
            if rule.patient not in patients:
                return "resource is outside the patient compartment of the token"
            if patients != {rule.patient}:
                return "resource is in another patient's compartment too"
        if not all(matches(resource, c, reg=registry.R4) for c in rule.criteria):
            return f"resource does not match the query of scope {rule.scope.raw}"
        return None

    def check_delete(self, resource_type: str, resource: Resource | None) -> None:
        """Raise Forbidden unless the caller may delete the (current version of the) resource."""
        rules = self.rules(resource_type, "d")
        if rules is None:
            return
        if resource_type == "Patient" and any(rule.patient is not None for rule in rules):
            if all(rule.patient is not None for rule in rules):
                raise Forbidden("a patient-context token cannot delete a Patient")
            rules = [rule for rule in rules if rule.patient is None]
        if resource is None:
            return
        reasons = [self._write_denial(rule, resource_type, resource, False) for rule in rules]
        if not any(reason is None for reason in reasons):
            raise Forbidden(next(r for r in reasons if r is not None))


def authorize(
    ctx: AuthContext,
    resource_type: str,
    interaction: str,
    *,
    resource: Resource | None = None,
) -> None:
    """Allow one interaction (``read``, ``search-type``, ``create``...) or raise Forbidden
    saying why; without `resource` only the type-level part is decided."""
    letter = required(interaction)
    policy = AccessPolicy(ctx)
    if letter in "rs":
        policy.check_read(resource_type, letter, resource)
    elif resource is None:
        policy.rules(resource_type, letter)
    elif letter == "d":
        policy.check_delete(resource_type, resource)
    else:
        policy.check_write(resource_type, letter, resource, creating=letter == "c")


def allowed(ctx: AuthContext, resource: Resource, interaction: str = "read") -> bool:
    """True when `authorize` would pass for this resource."""
    try:
        authorize(ctx, str(resource.get("resourceType", "")), interaction, resource=resource)
    except Forbidden:
        return False
    return True
