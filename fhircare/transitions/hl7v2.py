"""HL7 v2 ADT intake: ER7 message -> AdtMessage (FHIR R4 Patient, Encounter, Conditions).

    adt = parse_adt(raw)                 # raises Hl7Error -> answer with build_ack(raw, e.code ...)
    bundle = adt_to_transaction(adt)     # conditional upserts, urn:uuid references
    ack = build_ack(adt, "AA")

Parsing uses python-hl7; tables are in mappings/hl7v2.yaml. A timestamp with a time but no
UTC offset is read in `default_tz` (an IANA zone name, "UTC" by default), because FHIR
requires an offset on every dateTime that has a time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhircare.transitions.hl7v2_ack import ack_for_error, build_ack, encode_ack
from fhircare.transitions.hl7v2_er7 import (
    Er7Message,
    Hl7Error,
    Hl7Time,
    Segment,
    check_msh,
    decode_er7,
    load_tables,
    normalize,
    parse_ts,
)
from fhircare.transitions.hl7v2_map import (
    CONDITION_CATEGORY,
    DIAGNOSIS_ROLE,
    MapContext,
    admit_source,
    coded,
    condition_code,
    discharge_disposition,
    encounter_identifier,
    location_display,
    map_patient,
    participants,
    patient_class,
)
from fhircare.transitions.precision import hl7_span, ordered_end

__all__ = [
    "AdtMessage",
    "Hl7Error",
    "ack_for_error",
    "adt_to_transaction",
    "build_ack",
    "decode_er7",
    "encode_ack",
    "match_query",
    "parse_adt",
    "primary_identifier",
    "search_token",
]

CANCEL_DISCHARGE = "A13"


@dataclass(frozen=True)
class AdtMessage:
    """One accepted ADT message, header facts plus FHIR R4 resources as dicts."""

    control_id: str
    message_type: str
    trigger_event: str
    structure: str
    version: str
    processing_id: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_time: str | None
    event_time: str | None
    action: str  # admit, transfer, discharge, register, update, cancel-admit, ...
    charset: str
    patient: dict[str, Any] = field(repr=False)
    encounter: dict[str, Any] = field(repr=False)
    conditions: list[dict[str, Any]] = field(repr=False)
    patient_url: str = ""
    encounter_url: str = ""
    condition_urls: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    raw: str = field(default="", repr=False)  # normalised ER7 text (CR separators)
    # the discharge time at the precision it was sent (Encounter.period.end cannot say it)
    discharge_time: Hl7Time | None = None
    death_indicator: str = ""  # PID-30 as sent (Y, N or empty)

    @property
    def is_discharge(self) -> bool:
        return self.action == "discharge"


def parse_adt(message: str | bytes, *, default_tz: str = "UTC") -> AdtMessage:
    """Parse and map an ADT message; raise Hl7Error (AR/AE with location) when refused.

    `default_tz` must be an IANA zone name (ValueError otherwise: a configuration error).
    """
    try:  # fail fast on configuration, not per message
        ZoneInfo(default_tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown default timezone {default_tz!r}") from exc
    text, codec = decode_er7(message)
    text = normalize(text)
    check_msh(text)
    er7 = Er7Message(text, codec)
    msh = er7.segments[0]
    tables = load_tables()

    msg_type, trigger, structure = msh.get(9, 1).upper(), msh.get(9, 2).upper(), msh.get(9, 3)
    if not msg_type:
        raise Hl7Error(
            "MSH-9 message type is empty", "AR", segment="MSH", field=9, error_code="101"
        )
    if msg_type != "ADT":
        raise Hl7Error(
            f"unsupported message type {msg_type}^{trigger}: only ADT is accepted",
            "AR",
            segment="MSH",
            field=9,
            error_code="200",
        )
    evn = er7.first("EVN")
    if not trigger and evn is not None:
        trigger = evn.get(1).upper()  # EVN-1 carried the event before MSH-9.2 existed
    event = tables["events"].get(trigger)
    if event is None:
        raise Hl7Error(
            f"unsupported ADT event {trigger or '(none)'}; accepted: {', '.join(tables['events'])}",
            "AR",
            segment="MSH",
            field=9,
            error_code="201",
            component=2,
        )
    version = msh.get(12)
    if version not in tables["supported_versions"]:
        raise Hl7Error(
            f"unsupported HL7 version {version or '(none)'} in MSH-12",
            "AR",
            segment="MSH",
            field=12,
            error_code="203",
        )
    control_id = msh.get(10)
    if not control_id:
        raise Hl7Error(
            "MSH-10 message control id is empty", "AR", segment="MSH", field=10, error_code="101"
        )

    ctx = MapContext(tables, default_tz, msh.get(4, 1) or msh.get(4, 2) or msh.get(3, 1))
    pid = _required(er7, "PID")
    pv1 = _required(er7, "PV1")
    patient = map_patient(pid, er7.first("PD1"), ctx)
    patient_url = _urn()
    encounter_url = _urn()
    encounter, discharge_time = _map_encounter(
        trigger, event["status"], pv1, pid, evn, er7, patient, ctx
    )
    encounter["subject"] = {"reference": patient_url}
    conditions, condition_urls = _map_conditions(er7, encounter, patient_url, encounter_url, ctx)

    _validate(patient, "PID")
    _validate(encounter, "PV1")
    for cond in conditions:
        _validate(cond, "DG1")

    return AdtMessage(
        control_id=control_id,
        message_type=msg_type,
        trigger_event=trigger,
        structure=structure,
        version=version,
        processing_id=msh.get(11),
        sending_application=msh.get(3, 1) or msh.get(3, 2),
        sending_facility=msh.get(4, 1) or msh.get(4, 2),
        receiving_application=msh.get(5, 1) or msh.get(5, 2),
        receiving_facility=msh.get(6, 1) or msh.get(6, 2),
        message_time=ctx.ts(msh, 7),
        event_time=ctx.ts(evn, 2) if evn is not None else None,
        action=event["action"],
        charset=msh.get(18) or codec,
        patient=patient,
        encounter=encounter,
        conditions=conditions,
        patient_url=patient_url,
        encounter_url=encounter_url,
        condition_urls=tuple(condition_urls),
        warnings=tuple(ctx.warnings),
        raw=text,
        discharge_time=discharge_time,
        death_indicator=pid.get(30).upper(),
    )


def _required(er7: Er7Message, name: str) -> Segment:
    seg = er7.first(name)
    if seg is None:
        raise Hl7Error(f"required segment {name} is missing", "AE", segment=name, error_code="100")
    return seg


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _map_encounter(
    trigger: str,
    status: str,
    pv1: Segment,
    pid: Segment,
    evn: Segment | None,
    er7: Er7Message,
    patient: dict[str, Any],
    ctx: MapContext,
) -> tuple[dict[str, Any], Hl7Time | None]:
    enc: dict[str, Any] = {
        "resourceType": "Encounter",
        "identifier": [encounter_identifier(pv1, pid, patient, ctx)],
        "status": status,
        "class": patient_class(pv1, ctx),
    }
    start = ctx.ts(pv1, 44)
    end_raw = pv1.get(45)
    cancelled = status == "cancelled" or trigger == CANCEL_DISCHARGE
    if status == "finished" and not end_raw and evn is not None:
        end_raw = evn.get(6) or evn.get(2)
        if end_raw:
            ctx.warnings.append("discharge time taken from EVN (PV1-45 empty)")
    end = ctx.ts(pv1, 45, end_raw) if end_raw else None
    if trigger == CANCEL_DISCHARGE:
        end = None
    elif end and not cancelled:
        enc["status"] = "finished"
    end_ts = parse_ts(end_raw, ctx.default_tz) if end else None
    if start and end and end_ts:
        end = checked_end(start, parse_ts(pv1.get(44), ctx.default_tz), end, end_ts, ctx)
    period = {k: v for k, v in (("start", start), ("end", end)) if v}
    if period:
        enc["period"] = period
    admission_type = pv1.get(4)
    if admission_type:
        table = ctx.tables["admission_type"]
        if admission_type in table["codes"]:
            enc["type"] = [coded(table["system"], admission_type, table["codes"][admission_type])]
        else:
            enc["type"] = [coded(ctx.local["admission_type"], admission_type, pv1.get(4, 2))]
    service = pv1.get(10)
    if service:
        enc["serviceType"] = coded(ctx.local["hospital_service"], service, pv1.get(10, 2))
    parts = participants(pv1, ctx)
    if parts:
        enc["participant"] = parts
    pv2 = er7.first("PV2")
    if pv2 is not None and (pv2.get(3, 1) or pv2.get(3, 2)):
        enc["reasonCode"] = [{"text": pv2.get(3, 2) or pv2.get(3, 1)}]
    hosp: dict[str, Any] = {}
    source = admit_source(pv1, ctx)
    if source:
        hosp["admitSource"] = source
    disposition = discharge_disposition(pv1, ctx) if trigger != CANCEL_DISCHARGE else None
    if disposition and status != "cancelled":
        hosp["dischargeDisposition"] = disposition
    if hosp:
        enc["hospitalization"] = hosp
    locations = []
    loc_status = "completed" if enc["status"] in ("finished", "cancelled") else "active"
    for n, state in ((3, loc_status), (6, "completed")):
        reps = pv1.reps(n)
        display = location_display(reps[0]) if reps else ""
        if display:
            locations.append({"location": {"display": display}, "status": state})
    if locations:
        enc["location"] = locations
    return enc, end_ts


def checked_end(start: str, start_ts: Hl7Time, end: str, end_ts: Hl7Time, ctx: MapContext) -> str:
    """The discharge time to store, compared with the admit time at the coarser of the two
    precisions: AE when it lies wholly before the admit time; the admit time itself when it
    falls in the same minute (or hour, day) but was written earlier, so the Encounter never
    ends before it starts (FHIR invariant per-1)."""
    kept = ordered_end(start, hl7_span(start_ts), end, hl7_span(end_ts))
    if kept is None:
        raise Hl7Error(
            "discharge time (PV1-45) is before admit time (PV1-44)",
            "AE",
            segment="PV1",
            field=45,
            error_code="102",
        )
    if kept != end:
        ctx.warnings.append(
            f"discharge time given to the {end_ts.precision} falls in the admit time's "
            f"{end_ts.precision}: stored as the admit time"
        )
    return kept


def _map_conditions(
    er7: Er7Message,
    encounter: dict[str, Any],
    patient_url: str,
    encounter_url: str,
    ctx: MapContext,
) -> tuple[list[dict[str, Any]], list[str]]:
    """DG1 segments -> encounter-diagnosis Conditions (+ Encounter.diagnosis links)."""
    visit = encounter["identifier"][0]["value"]
    conditions, urls, diagnoses = [], [], []
    seen: set[str] = set()
    for index, dg1 in enumerate(er7.all("DG1"), start=1):
        code = condition_code(dg1, ctx)
        if not code:
            ctx.warnings.append(f"DG1 #{index} has neither code nor text; skipped")
            continue
        first = code.get("coding", [{}])[0].get("code")
        key = f"{visit}:{first}" if first else f"{visit}:dg1-{dg1.get(1) or index}"
        if key in seen:
            continue
        seen.add(key)
        cond: dict[str, Any] = {
            "resourceType": "Condition",
            "identifier": [{"system": ctx.local["dg1_identifier"], "value": key}],
            "category": [
                {
                    "coding": [
                        {
                            "system": CONDITION_CATEGORY,
                            "code": "encounter-diagnosis",
                            "display": "Encounter Diagnosis",
                        }
                    ]
                }
            ],
            "code": code,
            "subject": {"reference": patient_url},
            "encounter": {"reference": encounter_url},
        }
        recorded = ctx.ts(dg1, 5)
        if recorded:
            cond["recordedDate"] = recorded
        url = _urn()
        conditions.append(cond)
        urls.append(url)
        diag: dict[str, Any] = {"condition": {"reference": url}}
        role = ctx.tables["diagnosis_type"].get(dg1.get(6).upper())
        if role:
            diag["use"] = {"coding": [{"system": DIAGNOSIS_ROLE, **role}]}
        rank = dg1.get(15)
        if rank.isdigit() and int(rank) > 0:
            diag["rank"] = int(rank)
        diagnoses.append(diag)
    if diagnoses:
        encounter["diagnosis"] = diagnoses
    return conditions, urls


def _validate(resource: dict[str, Any], segment: str) -> None:
    """Check a mapped resource against fhir.resources R4B; AE naming the failing paths."""
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except ValidationError as exc:
        paths = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
        raise Hl7Error(
            f"{resource['resourceType']} mapped from {segment} is not valid FHIR R4 ({paths})",
            "AE",
            segment=segment,
            error_code="102",
        ) from exc


# --- transaction --------------------------------------------------------------------------


def search_token(system: str, value: str) -> str:
    """`system|value` for a token search, with FHIR search escapes and URL quoting."""

    def esc(s: str) -> str:
        for ch in ("\\", "|", ",", "$"):
            s = s.replace(ch, "\\" + ch)
        return quote(s, safe=":/._-~\\,|$")

    return f"{esc(system)}|{esc(value)}"


def primary_identifier(patient: dict[str, Any]) -> dict[str, Any]:
    """The identifier a Patient is matched on: the first MR-typed one, else the first."""
    for ident in patient["identifier"]:
        codes = [c.get("code") for c in ident.get("type", {}).get("coding", [])]
        if "MR" in codes:
            return ident
    return patient["identifier"][0]


def match_query(resource: dict[str, Any]) -> str:
    """The conditional query a mapped Patient or Encounter is upserted on (`identifier=...`)."""
    ident = (
        primary_identifier(resource)
        if resource["resourceType"] == "Patient"
        else resource["identifier"][0]
    )
    return f"identifier={search_token(ident['system'], ident['value'])}"


def adt_to_transaction(
    adt: AdtMessage, *, if_match: dict[str, str] | None = None
) -> dict[str, Any]:
    """A FHIR transaction Bundle: conditional PUT of Patient and Encounter on their first
    identifier, conditional create (ifNoneExist) of each Condition on its DG1 identifier.

    `if_match` (resource type -> versionId) makes the Patient or Encounter PUT fail if the
    stored one changed since it was read (it was merged with the message: see hl7v2_merge).
    """
    entries: list[dict[str, Any]] = []
    for url, resource in ((adt.patient_url, adt.patient), (adt.encounter_url, adt.encounter)):
        rtype = resource["resourceType"]
        request = {"method": "PUT", "url": f"{rtype}?{match_query(resource)}"}
        if if_match and rtype in if_match:
            request["ifMatch"] = f'W/"{if_match[rtype]}"'
        entries.append({"fullUrl": url, "resource": resource, "request": request})
    for url, cond in zip(adt.condition_urls, adt.conditions, strict=True):
        cid = cond["identifier"][0]
        entries.append(
            {
                "fullUrl": url,
                "resource": cond,
                "request": {
                    "method": "POST",
                    "url": "Condition",
                    "ifNoneExist": f"identifier={search_token(cid['system'], cid['value'])}",
                },
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
