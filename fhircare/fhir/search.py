"""FHIR search over plain resource dicts: parameter definitions, matching and sorting.

Used by the embedded store (which keeps resources in memory) and by anything that needs
to match a resource against a FHIR query (e.g. Subscription criteria).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from fhircare.fhir.errors import BadRequest

# Search-result control parameters handled by the caller (paging, includes, formats).
CONTROL_PARAMS = {
    "_count",
    "_offset",
    "_include",
    "_revinclude",
    "_format",
    "_pretty",
    "_summary",
    "_total",
    "_elements",
    "_sort",
    "_getpages",
}

SUBJECT_PATHS = ["subject", "patient", "for", "beneficiary"]


@dataclass(frozen=True)
class ParamDef:
    """A search parameter: its FHIR type and the element paths it reads."""

    kind: str  # token | reference | date | string | uri | number | quantity
    paths: tuple[str, ...]


def _p(kind: str, *paths: str) -> ParamDef:
    return ParamDef(kind, paths)


COMMON: dict[str, ParamDef] = {
    "_id": _p("token", "id"),
    "_lastUpdated": _p("date", "meta.lastUpdated"),
    "_tag": _p("token", "meta.tag"),
    "_profile": _p("uri", "meta.profile"),
    "_security": _p("token", "meta.security"),
    "identifier": _p("token", "identifier"),
    "status": _p("token", "status"),
}

CANONICAL: dict[str, ParamDef] = {
    "url": _p("uri", "url"),
    "version": _p("token", "version"),
    "name": _p("string", "name"),
    "title": _p("string", "title"),
}

# Per-type parameters (a practical subset of the R4 SearchParameter registry).
BY_TYPE: dict[str, dict[str, ParamDef]] = {
    "Patient": {
        "name": _p("string", "name"),
        "family": _p("string", "name.family"),
        "given": _p("string", "name.given"),
        "birthdate": _p("date", "birthDate"),
        "gender": _p("token", "gender"),
        "general-practitioner": _p("reference", "generalPractitioner"),
        "organization": _p("reference", "managingOrganization"),
        "active": _p("token", "active"),
        "telecom": _p("token", "telecom"),
        "address-postalcode": _p("string", "address.postalCode"),
    },
    "Practitioner": {
        "name": _p("string", "name"),
        "family": _p("string", "name.family"),
        "given": _p("string", "name.given"),
        "active": _p("token", "active"),
    },
    "Organization": {
        "name": _p("string", "name"),
        "type": _p("token", "type"),
        "active": _p("token", "active"),
        "partof": _p("reference", "partOf"),
    },
    "RelatedPerson": {"patient": _p("reference", "patient"), "name": _p("string", "name")},
    "CareTeam": {
        "patient": _p("reference", "subject"),
        "subject": _p("reference", "subject"),
        "participant": _p("reference", "participant.member"),
        "category": _p("token", "category"),
        "encounter": _p("reference", "encounter"),
        "date": _p("date", "period"),
    },
    "Encounter": {
        "patient": _p("reference", "subject"),
        "subject": _p("reference", "subject"),
        "class": _p("token", "class"),
        "type": _p("token", "type"),
        "date": _p("date", "period"),
        "period-end": _p("date", "period.end"),
        "participant": _p("reference", "participant.individual"),
        "reason-code": _p("token", "reasonCode"),
        "location": _p("reference", "location.location"),
        "service-provider": _p("reference", "serviceProvider"),
    },
    "Condition": {
        "patient": _p("reference", "subject"),
        "subject": _p("reference", "subject"),
        "code": _p("token", "code"),
        "category": _p("token", "category"),
        "clinical-status": _p("token", "clinicalStatus"),
        "verification-status": _p("token", "verificationStatus"),
        "encounter": _p("reference", "encounter"),
        "onset-date": _p("date", "onsetDateTime", "onsetPeriod"),
        "recorded-date": _p("date", "recordedDate"),
        "abatement-date": _p("date", "abatementDateTime", "abatementPeriod"),
    },
    "Observation": {
        "patient": _p("reference", "subject"),
        "subject": _p("reference", "subject"),
        "code": _p("token", "code"),
        "category": _p("token", "category"),
        "date": _p("date", "effectiveDateTime", "effectivePeriod", "effectiveInstant"),
        "encounter": _p("reference", "encounter"),
        "derived-from": _p("reference", "derivedFrom"),
        "focus": _p("reference", "focus"),
        "performer": _p("reference", "performer"),
        "value-concept": _p("token", "valueCodeableConcept"),
        "value-quantity": _p("quantity", "valueQuantity"),
        "based-on": _p("reference", "basedOn"),
        "has-member": _p("reference", "hasMember"),
    },
    "Goal": {
        "patient": _p("reference", "subject"),
        "subject": _p("reference", "subject"),
        "lifecycle-status": _p("token", "lifecycleStatus"),
        "achievement-status": _p("token", "achievementStatus"),
        "category": _p("token", "category"),
        "target-date": _p("date", "target.dueDate"),
        "start-date": _p("date", "startDate"),
    },
    "CarePlan": {
        "patient": _p("reference", "subject"),
        "subject": _p("reference", "subject"),
        "category": _p("token", "category"),
        "intent": _p("token", "intent"),
        "date": _p("date", "period"),
        "encounter": _p("reference", "encounter"),
        "care-team": _p("reference", "careTeam"),
        "goal": _p("reference", "goal"),
        "condition": _p("reference", "addresses"),
        "based-on": _p("reference", "basedOn"),
        "replaces": _p("reference", "replaces"),
        "part-of": _p("reference", "partOf"),
        "instantiates-canonical": _p("uri", "instantiatesCanonical"),
        "activity-reference": _p("reference", "activity.reference"),
        "performer": _p("reference", "activity.detail.performer"),
    },
    "Task": {
        "patient": _p("reference", "for"),
        "subject": _p("reference", "for"),
        "for": _p("reference", "for"),
        "owner": _p("reference", "owner"),
        "requester": _p("reference", "requester"),
        "focus": _p("reference", "focus"),
        "based-on": _p("reference", "basedOn"),
        "part-of": _p("reference", "partOf"),
        "encounter": _p("reference", "encounter"),
        "code": _p("token", "code"),
        "business-status": _p("token", "businessStatus"),
        "priority": _p("token", "priority"),
        "intent": _p("token", "intent"),
        "authored-on": _p("date", "authoredOn"),
        "modified": _p("date", "lastModified"),
        "period": _p("date", "executionPeriod"),
        "group-identifier": _p("token", "groupIdentifier"),
    },
    "ServiceRequest": {
        "patient": _p("reference", "subject"),
        "subject": _p("reference", "subject"),
        "code": _p("token", "code"),
        "category": _p("token", "category"),
        "intent": _p("token", "intent"),
        "performer": _p("reference", "performer"),
        "requester": _p("reference", "requester"),
        "encounter": _p("reference", "encounter"),
        "based-on": _p("reference", "basedOn"),
        "authored": _p("date", "authoredOn"),
        "priority": _p("token", "priority"),
    },
    "Questionnaire": {
        "code": _p("token", "code", "item.code"),
        "context-type": _p("token", "useContext.code"),
        "date": _p("date", "date"),
        "publisher": _p("string", "publisher"),
    },
    "QuestionnaireResponse": {
        "patient": _p("reference", "subject"),
        "subject": _p("reference", "subject"),
        "questionnaire": _p("uri", "questionnaire"),
        "author": _p("reference", "author"),
        "authored": _p("date", "authored"),
        "encounter": _p("reference", "encounter"),
        "based-on": _p("reference", "basedOn"),
    },
    "PlanDefinition": {"type": _p("token", "type"), "topic": _p("token", "topic")},
    "ActivityDefinition": {"topic": _p("token", "topic"), "kind": _p("token", "kind")},
    "MedicationRequest": {
        "patient": _p("reference", "subject"),
        "subject": _p("reference", "subject"),
        "code": _p("token", "medicationCodeableConcept"),
        "medication": _p("reference", "medicationReference"),
        "category": _p("token", "category"),
        "intent": _p("token", "intent"),
        "encounter": _p("reference", "encounter"),
        "authoredon": _p("date", "authoredOn"),
        "requester": _p("reference", "requester"),
    },
    "MedicationStatement": {
        "patient": _p("reference", "subject"),
        "subject": _p("reference", "subject"),
        "code": _p("token", "medicationCodeableConcept"),
        "medication": _p("reference", "medicationReference"),
        "category": _p("token", "category"),
        "context": _p("reference", "context"),
        "effective": _p("date", "effectiveDateTime", "effectivePeriod"),
        "part-of": _p("reference", "partOf"),
        "source": _p("reference", "informationSource"),
    },
    "Medication": {
        "code": _p("token", "code"),
        "ingredient-code": _p("token", "ingredient.itemCodeableConcept"),
        "form": _p("token", "form"),
    },
    "List": {
        "patient": _p("reference", "subject"),
        "subject": _p("reference", "subject"),
        "code": _p("token", "code"),
        "encounter": _p("reference", "encounter"),
        "item": _p("reference", "entry.item"),
        "date": _p("date", "date"),
        "source": _p("reference", "source"),
        "title": _p("string", "title"),
    },
    "DetectedIssue": {
        "patient": _p("reference", "patient"),
        "code": _p("token", "code"),
        "implicated": _p("reference", "implicated"),
        "identified": _p("date", "identifiedDateTime", "identifiedPeriod"),
        "author": _p("reference", "author"),
    },
    "Communication": {
        "patient": _p("reference", "subject"),
        "subject": _p("reference", "subject"),
        "category": _p("token", "category"),
        "encounter": _p("reference", "encounter"),
        "sender": _p("reference", "sender"),
        "recipient": _p("reference", "recipient"),
        "sent": _p("date", "sent"),
        "based-on": _p("reference", "basedOn"),
        "part-of": _p("reference", "partOf"),
        "about": _p("reference", "about"),
    },
    "Provenance": {
        "target": _p("reference", "target"),
        "patient": _p("reference", "target"),
        "agent": _p("reference", "agent.who"),
        "recorded": _p("date", "recorded"),
        "activity": _p("token", "activity"),
    },
    "AuditEvent": {
        "patient": _p("reference", "entity.what"),
        "entity": _p("reference", "entity.what"),
        "agent": _p("reference", "agent.who"),
        "date": _p("date", "recorded"),
        "action": _p("token", "action"),
        "type": _p("token", "type"),
        "subtype": _p("token", "subtype"),
        "outcome": _p("token", "outcome"),
    },
    "Subscription": {
        "criteria": _p("string", "criteria"),
        "type": _p("token", "channel.type"),
        "url": _p("uri", "channel.endpoint"),
    },
    "Basic": {
        "code": _p("token", "code"),
        "subject": _p("reference", "subject"),
        "patient": _p("reference", "subject"),
    },
}

CANONICAL_TYPES = {
    "Questionnaire",
    "PlanDefinition",
    "ActivityDefinition",
    "StructureDefinition",
    "ValueSet",
    "CodeSystem",
    "ConceptMap",
    "SearchParameter",
    "OperationDefinition",
}

COMPARATORS = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def param_def(resource_type: str, name: str) -> ParamDef | None:
    """The definition of a search parameter on a type, or None when unknown."""
    type_params = BY_TYPE.get(resource_type, {})
    if name in type_params:
        return type_params[name]
    if resource_type in CANONICAL_TYPES and name in CANONICAL:
        return CANONICAL[name]
    return COMMON.get(name)


def supported_params(resource_type: str) -> dict[str, ParamDef]:
    """Every search parameter supported on a type (for the CapabilityStatement)."""
    out = dict(COMMON)
    if resource_type in CANONICAL_TYPES:
        out.update(CANONICAL)
    out.update(BY_TYPE.get(resource_type, {}))
    return out


def values_at(resource: dict[str, Any], path: str) -> Iterator[Any]:
    """Every value at a dotted path, flattening lists at each step."""
    current: list[Any] = [resource]
    for part in path.split("."):
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, dict) and part in item:
                value = item[part]
                if isinstance(value, list):
                    nxt.extend(value)
                else:
                    nxt.append(value)
        current = nxt
        if not current:
            return
    yield from current


# ---- date handling ---------------------------------------------------------------------

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def date_range(text: str) -> tuple[datetime, datetime]:
    """The [start, end) instant range a FHIR date/dateTime/instant value covers."""
    m = _DATE_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a FHIR date: {text!r}")
    y = int(m["y"])
    tz = UTC
    if m["tz"] and m["tz"] != "Z":
        sign = 1 if m["tz"][0] == "+" else -1
        hh, mm = m["tz"][1:].split(":")
        tz = timezone(sign * timedelta(hours=int(hh), minutes=int(mm)))
    if m["m"] is None:
        start = datetime(y, 1, 1, tzinfo=tz)
        return start, datetime(y + 1, 1, 1, tzinfo=tz)
    mo = int(m["m"])
    if m["d"] is None:
        start = datetime(y, mo, 1, tzinfo=tz)
        end = datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=tz)
        return start, end
    d = int(m["d"])
    if m["H"] is None:
        start = datetime(y, mo, d, tzinfo=tz)
        return start, start + timedelta(days=1)
    sec = int(m["S"] or 0)
    micro = int((m["f"] or ".0")[1:7].ljust(6, "0"))
    start = datetime(y, mo, d, int(m["H"]), int(m["M"]), sec, micro, tzinfo=tz)
    if m["S"] is None:
        return start, start + timedelta(minutes=1)
    if m["f"] is None:
        return start, start + timedelta(seconds=1)
    return start, start + timedelta(microseconds=1)


def _value_ranges(value: Any) -> Iterator[tuple[datetime, datetime]]:
    if isinstance(value, str):
        try:
            yield date_range(value)
        except ValueError:
            return
    elif isinstance(value, dict):  # Period or Timing-like
        lo = value.get("start")
        hi = value.get("end")
        start = date_range(lo)[0] if lo else datetime.min.replace(tzinfo=UTC)
        end = date_range(hi)[1] if hi else datetime.max.replace(tzinfo=UTC)
        yield start, end


def _match_date(values: list[Any], expr: str) -> bool:
    prefix, text = _split_prefix(expr)
    try:
        lo, hi = date_range(text)
    except ValueError as exc:
        raise BadRequest(f"Invalid date search value {expr!r}: {exc}", code="value") from exc
    for value in values:
        for vlo, vhi in _value_ranges(value):
            contained = vlo >= lo and vhi <= hi
            if (
                (prefix == "eq" and contained)
                or (prefix == "ne" and not contained)
                or (prefix in ("gt", "sa") and vhi > hi)
                or (prefix in ("lt", "eb") and vlo < lo)
                or (prefix == "ge" and (vhi > hi or contained))
                or (prefix == "le" and (vlo < lo or contained))
                or (prefix == "ap" and vlo < hi and vhi > lo)
            ):
                return True
    return False


def _split_prefix(expr: str) -> tuple[str, str]:
    if len(expr) > 2 and expr[:2] in COMPARATORS and not expr[:2].isdigit():
        return expr[:2], expr[2:]
    return "eq", expr


# ---- token / reference / string ---------------------------------------------------------


def _codings(value: Any) -> Iterator[tuple[str | None, str | None]]:
    """(system, code) pairs from a code, Coding, CodeableConcept, Identifier or boolean."""
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, str | int):
        yield None, str(value)
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value.get("coding") or []:
                yield coding.get("system"), coding.get("code")
        elif "value" in value and ("system" in value or "type" in value or "use" in value):
            yield value.get("system"), value.get("value")  # Identifier / ContactPoint
        elif "code" in value:
            yield value.get("system"), value.get("code")
        elif "value" in value:
            yield value.get("system"), str(value.get("value"))


def _match_token(values: list[Any], expr: str, modifier: str | None) -> bool:
    if modifier == "text":
        needle = expr.lower()
        for value in values:
            if isinstance(value, dict):
                texts = [value.get("text") or ""] + [
                    c.get("display") or "" for c in value.get("coding") or []
                ]
                if any(needle in t.lower() for t in texts):
                    return True
        return False
    if "|" in expr:
        system, code = expr.split("|", 1)
        for value in values:
            for vs, vc in _codings(value):
                if system and (vs or "") != system:
                    continue
                if not system and vs:
                    continue
                if code == "" or vc == code:
                    return True
        return False
    return any(vc == expr for value in values for _, vc in _codings(value))


def _reference_strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        ref = value.get("reference")
        if ref:
            yield ref
    elif isinstance(value, str):
        yield value


def _normalise_ref(ref: str) -> str:
    """'http://x/fhir/Patient/1/_history/2' -> 'Patient/1'."""
    ref = ref.split("/_history/")[0]
    parts = ref.rstrip("/").split("/")
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    return ref


def _match_reference(values: list[Any], expr: str, resource_type_hint: str | None) -> bool:
    target = _normalise_ref(expr)
    bare = "/" not in expr
    for value in values:
        for ref in _reference_strings(value):
            norm = _normalise_ref(ref)
            if bare:
                if norm.split("/")[-1] == expr and (
                    resource_type_hint is None or norm.split("/")[0] == resource_type_hint
                ):
                    return True
            elif norm == target:
                return True
    return False


def _string_values(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):  # HumanName, Address
        for key in ("text", "family", "given", "prefix", "suffix", "line", "city", "postalCode"):
            v = value.get(key)
            if isinstance(v, list):
                yield from (x for x in v if isinstance(x, str))
            elif isinstance(v, str):
                yield v


def _match_string(values: list[Any], expr: str, modifier: str | None) -> bool:
    needle = expr.lower()
    for value in values:
        for s in _string_values(value):
            if modifier == "exact" and s == expr:
                return True
            if modifier == "contains" and needle in s.lower():
                return True
            if modifier is None and s.lower().startswith(needle):
                return True
    return False


def _match_number(values: list[Any], expr: str) -> bool:
    prefix, text = _split_prefix(expr)
    try:
        target = float(text.split("|")[0])
    except ValueError as exc:
        raise BadRequest(f"Invalid number search value {expr!r}", code="value") from exc
    for value in values:
        v = value.get("value") if isinstance(value, dict) else value
        if not isinstance(v, int | float):
            continue
        if (
            (prefix == "eq" and v == target)
            or (prefix == "ne" and v != target)
            or (prefix == "gt" and v > target)
            or (prefix == "lt" and v < target)
            or (prefix == "ge" and v >= target)
            or (prefix == "le" and v <= target)
        ):
            return True
    return False


# ---- the query --------------------------------------------------------------------------


@dataclass(frozen=True)
class Criterion:
    name: str
    modifier: str | None
    definition: ParamDef
    alternatives: tuple[str, ...]  # comma-separated values: OR


def parse_query(
    resource_type: str, params: Iterable[tuple[str, str]], *, strict: bool = True
) -> tuple[list[Criterion], list[str]]:
    """Criteria (ANDed) and the sort keys; unknown parameters raise BadRequest if strict."""
    criteria: list[Criterion] = []
    sort: list[str] = []
    for raw_name, raw_value in params:
        if raw_name == "_sort":
            sort.extend(s for s in raw_value.split(",") if s)
            continue
        if raw_name in CONTROL_PARAMS:
            continue
        name, _, modifier = raw_name.partition(":")
        definition = param_def(resource_type, name)
        if definition is None:
            if strict:
                raise BadRequest(
                    f"Unknown search parameter '{name}' for resource type '{resource_type}'",
                    code="not-supported",
                )
            continue
        mod = modifier or None
        if mod == "missing":
            if raw_value not in ("true", "false"):
                raise BadRequest(f"':missing' takes true or false, not {raw_value!r}")
        elif (
            mod
            and mod not in ("exact", "contains", "text", "not", "above", "below")
            and (definition.kind != "reference")
        ):
            raise BadRequest(f"Unsupported modifier ':{mod}' on '{name}'", code="not-supported")
        alternatives = tuple(_split_commas(raw_value))
        if not alternatives or any(a == "" for a in alternatives) and mod != "missing":
            raise BadRequest(f"Empty value for search parameter '{name}'", code="value")
        if mod != "missing":
            for alt in alternatives:
                _check_value(name, definition.kind, alt)
        criteria.append(Criterion(name, mod, definition, alternatives))
    for key in sort:
        field = key.lstrip("-")
        if field != "_lastUpdated" and param_def(resource_type, field) is None:
            raise BadRequest(f"Unknown sort parameter '{field}'", code="not-supported")
    return criteria, sort


def _check_value(name: str, kind: str, value: str) -> None:
    """Refuse a date or number search value that cannot be parsed (even with no candidates)."""
    _, text = _split_prefix(value)
    try:
        if kind == "date":
            date_range(text)
        elif kind in ("number", "quantity"):
            float(text.split("|")[0])
    except ValueError as exc:
        raise BadRequest(
            f"Invalid {kind} value for '{name}': {value[:80]!r}", code="value"
        ) from exc


def _split_commas(value: str) -> list[str]:
    """Split on commas not escaped with a backslash."""
    parts = re.split(r"(?<!\\),", value)
    return [p.replace("\\,", ",") for p in parts]


def matches(resource: dict[str, Any], criteria: list[Criterion]) -> bool:
    """True when the resource satisfies every criterion."""
    for crit in criteria:
        values = [v for path in crit.definition.paths for v in values_at(resource, path)]
        if crit.modifier == "missing":
            if (crit.alternatives[0] == "true") != (not values):
                return False
            continue
        if crit.modifier == "not":
            if any(_match_token(values, alt, None) for alt in crit.alternatives):
                return False
            continue
        if not any(_match_one(crit, values, alt) for alt in crit.alternatives):
            return False
    return True


def _match_one(crit: Criterion, values: list[Any], alt: str) -> bool:
    kind = crit.definition.kind
    if kind == "token":
        return _match_token(values, alt, crit.modifier)
    if kind == "reference":
        hint = crit.modifier if crit.modifier and crit.modifier[0].isupper() else None
        if crit.name in ("patient",):
            hint = "Patient"
        return _match_reference(values, alt, hint)
    if kind == "date":
        return _match_date(values, alt)
    if kind == "string":
        return _match_string(values, alt, crit.modifier)
    if kind == "uri":
        base = alt.split("|")[0]
        return any(isinstance(v, str) and v.split("|")[0] == base for v in values)
    if kind in ("number", "quantity"):
        return _match_number(values, alt)
    return False


def sort_resources(resources: list[dict[str, Any]], sort: list[str]) -> list[dict[str, Any]]:
    """Sort by the `_sort` keys (stable; missing values last)."""
    for key in reversed(sort):
        desc = key.startswith("-")
        field = key.lstrip("-")
        path = "meta.lastUpdated" if field == "_lastUpdated" else None

        def keyfn(r: dict[str, Any], path: str | None = path, field: str = field) -> str:
            if path:
                vals = list(values_at(r, path))
            else:
                definition = param_def(r.get("resourceType", ""), field)
                vals = [v for p in definition.paths for v in values_at(r, p)] if definition else []
            first = vals[0] if vals else None
            if isinstance(first, dict):
                first = first.get("start") or first.get("value") or first.get("reference")
            return "" if first is None else str(first)

        present = [r for r in resources if keyfn(r)]
        missing = [r for r in resources if not keyfn(r)]
        present.sort(key=keyfn, reverse=desc)
        resources = present + missing
    return resources
