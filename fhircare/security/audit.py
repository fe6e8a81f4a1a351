"""AuditEvent records of API access, and log redaction so logs carry no patient data.

`audit_event` builds a FHIR R4 AuditEvent (type ``rest`` from
http://terminology.hl7.org/CodeSystem/audit-event-type, subtype from
http://hl7.org/fhir/restful-interaction); `export_event` one for a step of a Bulk Data
export (type DICOM ``110106`` Export). Patient data belongs in AuditEvents kept in the
store, never in process logs: `RedactingFilter` scrubs bearer tokens/JWTs, query strings,
patient references and SSN-like numbers from every log record it sees.
"""

from __future__ import annotations

import base64
import logging
import re
from datetime import datetime
from typing import Any, Literal

from fhircare.security.context import AuthContext

Action = Literal["C", "R", "U", "D", "E"]
ExportStage = Literal["kick-off", "complete", "download"]

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle"
CLIENT_ID_SYSTEM = "http://fhircare.org/fhir/sid/oauth-client-id"
URI = "urn:ietf:rfc:3986"

_DEFAULT_SUBTYPE = {"C": "create", "R": "read", "U": "update", "D": "delete", "E": "operation"}
_OUTCOMES = {"0", "4", "8", "12"}
_INTERACTIONS = {
    "read", "vread", "update", "patch", "delete", "history", "history-instance",
    "history-type", "history-system", "create", "search", "search-type", "search-system",
    "capabilities", "transaction", "batch", "operation",
}  # fmt: skip


def _agents(ctx: AuthContext) -> list[dict[str, Any]]:
    client: dict[str, Any] | None = None
    if ctx.client_id:
        client = {
            "type": {"coding": [{"system": DICOM, "code": "110150", "display": "Application"}]},
            "who": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": ctx.client_id}},
            "requestor": False,
        }
    if ctx.fhir_user:
        user: dict[str, Any] = {
            "type": {
                "coding": [{"system": SECURITY_ROLE, "code": "humanuser", "display": "human user"}]
            },
            "who": {"reference": ctx.fhir_user},
            "requestor": True,
        }
        if ctx.subject:
            user["altId"] = ctx.subject
        return [user, client] if client else [user]
    if client:
        client["requestor"] = True
        if ctx.subject and ctx.subject != ctx.client_id:
            client["altId"] = ctx.subject
        return [client]
    return [{"who": {"display": ctx.subject or "anonymous"}, "requestor": True}]


def audit_event(
    ctx: AuthContext,
    action: Action,
    resource_type: str | None,
    id: str | None,
    outcome_code: str,
    *,
    patient_ref: str | None = None,
    query: str | None = None,
    now: datetime,
    interaction: str | None = None,
    outcome_desc: str | None = None,
    observer: str = "fhircare",
) -> dict[str, Any]:
    """A FHIR R4 AuditEvent for one REST interaction.

    `action` C/R/U/D/E; `outcome_code` "0" success, "4" minor failure (e.g. 4xx),
    "8" serious failure (5xx). `interaction` overrides the subtype derived from the action
    (``vread``, ``search-type``, ``history-instance``, ``transaction``...); a read with a
    `query` defaults to ``search-type``. `query` (the search string) is stored base64
    encoded in a Query entity. `now` must be timezone-aware.
    """
    if action not in _DEFAULT_SUBTYPE:
        raise ValueError(f"action must be one of C, R, U, D, E, not {action!r}")
    if outcome_code not in _OUTCOMES:
        raise ValueError(f"outcome_code must be one of {sorted(_OUTCOMES)}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    default = "search-type" if action == "R" and query else _DEFAULT_SUBTYPE[action]
    subtype = interaction or default
    if subtype not in _INTERACTIONS:
        raise ValueError(f"unknown restful interaction {subtype!r}")
    entities: list[dict[str, Any]] = []
    if resource_type and id:
        entities.append(_object_entity({"reference": f"{resource_type}/{id}"}))
    if patient_ref:
        entities.append(_patient_entity(patient_ref))
    if query is not None:
        description = f"search on {resource_type}" if resource_type else None
        entities.append(_query_entity(query, description))
    event = _event(
        ctx,
        {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        subtype,
        action,
        outcome_code,
        now=now,
        outcome_desc=outcome_desc,
        observer=observer,
    )
    if entities:
        event["entity"] = entities
    return event


def search_events(
    ctx: AuthContext,
    resource_type: str,
    query: str,
    patient_refs: list[str],
    *,
    now: datetime,
) -> list[dict[str, Any]]:
    """The AuditEvents of one search, one per patient whose data it returned: each equal to
    `audit_event(ctx, "R", resource_type, None, "0", patient_ref=p, query=query, now=now)`,
    built once and sharing all but the patient entity (nothing changes an event in place:
    the store keeps what it is handed, or packs it)."""
    if not patient_refs:
        return []
    shared = audit_event(ctx, "R", resource_type, None, "0", query=query, now=now)
    rest = shared["entity"]  # the query entity, after the patient's as in `audit_event`
    return [shared | {"entity": [_patient_entity(p), *rest]} for p in patient_refs]


def export_event(
    ctx: AuthContext,
    stage: ExportStage,
    *,
    job_url: str,
    now: datetime,
    outcome_code: str = "0",
    outcome_desc: str | None = None,
    request_url: str | None = None,
    group_ref: str | None = None,
    patient_ref: str | None = None,
    file_url: str | None = None,
    observer: str = "fhircare",
) -> dict[str, Any]:
    """A FHIR R4 AuditEvent for one step of a Bulk Data export, type DICOM 110106 Export.

    ``kick-off``: action E, subtype restful-interaction ``operation``; entities the job,
    the request URL (a Query entity, base64) and the Group. ``complete``: action R, one
    event per patient whose data the export holds (the Patient entity with lifecycle
    Export), with the job and the request. ``download``: action R; the job and the file.
    The job is identified by its status URL (`job_url`), which ties the steps together.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if outcome_code not in _OUTCOMES:
        raise ValueError(f"outcome_code must be one of {sorted(_OUTCOMES)}")
    if stage not in ("kick-off", "complete", "download"):
        raise ValueError(f"unknown export stage {stage!r}")
    entities: list[dict[str, Any]] = []
    if patient_ref:
        patient = _patient_entity(patient_ref)
        patient["lifecycle"] = {"system": LIFECYCLE, "code": "10", "display": "Export"}
        entities.append(patient)
    job = _object_entity(_by_url(job_url), ("20", "Job"))
    job["description"] = "Bulk Data export job"
    entities.append(job)
    if request_url is not None:
        entities.append(_query_entity(request_url, "Bulk Data export request"))
    if group_ref:
        entities.append(_object_entity({"reference": group_ref}))
    if file_url:
        file = _object_entity(_by_url(file_url), ("3", "Report"))
        file["name"] = file_url.rsplit("/", 1)[-1]
        entities.append(file)
    event = _event(
        ctx,
        {"system": DICOM, "code": "110106", "display": "Export"},
        "operation" if stage == "kick-off" else None,
        "E" if stage == "kick-off" else "R",
        outcome_code,
        now=now,
        outcome_desc=outcome_desc,
        observer=observer,
    )
    event["entity"] = entities
    return event


def _event(
    ctx: AuthContext,
    type_: dict[str, str],
    subtype: str | None,
    action: str,
    outcome_code: str,
    *,
    now: datetime,
    outcome_desc: str | None,
    observer: str,
) -> dict[str, Any]:
    event: dict[str, Any] = {"resourceType": "AuditEvent", "type": type_}
    if subtype is not None:
        event["subtype"] = [{"system": RESTFUL_INTERACTION, "code": subtype, "display": subtype}]
    event |= {
        "action": action,
        "recorded": now.isoformat(timespec="milliseconds"),
        "outcome": outcome_code,
        "agent": _agents(ctx),
        "source": {
            "observer": {"display": observer},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if outcome_desc and outcome_code != "0":
        event["outcomeDesc"] = outcome_desc
    return event


def _object_entity(what: dict[str, Any], role: tuple[str, str] | None = None) -> dict[str, Any]:
    """A System Object entity (`what` a Reference), with an object-role when given."""
    entity: dict[str, Any] = {
        "what": what,
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
    }
    if role:
        entity["role"] = {"system": OBJECT_ROLE, "code": role[0], "display": role[1]}
    return entity


def _by_url(url: str) -> dict[str, Any]:
    """A Reference to something that is not a FHIR resource, by its URL."""
    return {"identifier": {"system": URI, "value": url}}


def _patient_entity(patient_ref: str) -> dict[str, Any]:
    return {
        "what": {"reference": patient_ref},
        "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
        "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
    }


def _query_entity(query: str, description: str | None) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
        "query": base64.b64encode(query.encode("utf-8")).decode("ascii"),
    }
    if description:
        entity["description"] = description
    return entity


_REDACTIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*"), "Bearer [redacted]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[jwt]"),
    (re.compile(r"\?[^\s\"']+"), "?[query]"),
    (re.compile(r"\bPatient/[A-Za-z0-9\-.]{1,64}"), "Patient/[id]"),
    (re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), "[ssn]"),
]


def redact(text: str) -> str:
    """`text` with tokens, query strings, patient references and SSN-like numbers masked."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _redact_arg(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return redact(str(value))


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message, arguments and traceback.

    Install on handlers (``handler.addFilter(RedactingFilter())``) so records from every
    logger, uvicorn's access log included, pass through it. Argument tuples keep their
    shape (uvicorn's access formatter unpacks them); numbers pass unchanged, every other
    argument is rendered to text and redacted. Tracebacks are rendered and redacted too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        original = str(record.msg)
        record.msg = redact(original)
        if record.args and record.msg.count("%") != original.count("%"):
            # redaction swallowed a placeholder: render first, then redact the text
            try:
                rendered = original % record.args
            except (TypeError, ValueError, KeyError):
                rendered = original
            record.msg = redact(rendered)
            record.args = None
        elif isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        if record.exc_info:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.msg = f"{record.msg}\n{redact(formatted)}"
            record.exc_info = None
            record.exc_text = None
        return True
