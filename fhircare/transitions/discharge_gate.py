"""Whether a discharge opens follow-up work at all, and the record of why not.

No follow-up (no reconciliation, no Tasks, no plan) when:

* the patient died: a discharge disposition whose plan is `none` in
  `mappings/transitions.yaml` (expired, in standard or mapped local codes), or the Patient
  recorded deceased (`deceasedBoolean` true or any `deceasedDateTime`, e.g. from PID-29/30);
* the discharge is older than the follow-up window (`follow_up_window_days`, the 30-day TCM
  period by default; `FHIRCARE_FOLLOWUP_WINDOW_DAYS`): a history load, not a discharge to
  act on. A discharge time is compared at its precision: a date is the whole day.

The decision is kept in the discharge marker and written as an AuditEvent (type DICOM 110100
Application Activity, action Execute, `outcomeDesc` the reason), so anyone can see why a
discharge has no follow-up: `GET /fhir/AuditEvent?entity=Encounter/<id>`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fhircare.care.common import codings_of, mapping
from fhircare.transitions.precision import may_be_on_or_after

Resource = dict[str, Any]

ID_SYSTEM = "http://fhircare.org/fhir/sid/transitions"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
DECEASED = "deceased"
OUTSIDE_WINDOW = "outside-window"


@dataclass(frozen=True)
class NoFollowUp:
    code: str  # deceased | outside-window
    text: str  # why, for people (may name dates: never logged)
    evidence: str = ""  # what says so (the disposition, the Patient record)


def window_days(override: int | None = None) -> int:
    """The follow-up window in days: `override` (the setting) or the mapping's default."""
    return int(
        override if override is not None else mapping("transitions")["follow_up_window_days"]
    )


def recorded_death(patient: Resource | None) -> str | None:
    """How the Patient record says the patient died, or None (alive or not known)."""
    if patient and patient.get("deceasedDateTime"):
        return f"patient recorded deceased {patient['deceasedDateTime']}"
    if patient and patient.get("deceasedBoolean") is True:
        return "patient recorded deceased"
    return None


def is_deceased(patient: Resource | None) -> bool:
    return recorded_death(patient) is not None


def death_evidence(encounter: Resource, plan: str, patient: Resource | None) -> str | None:
    """What says the patient died: the discharge disposition or the Patient record."""
    if plan == "none":
        disposition = (encounter.get("hospitalization") or {}).get("dischargeDisposition") or {}
        shown = disposition.get("text") or ", ".join(
            f"{s}|{c}" for s, c in codings_of(disposition) if c
        )
        return f"discharge disposition {shown or 'expired'}"
    return recorded_death(patient)


def no_follow_up(
    encounter: Resource,
    plan: str,
    patient: Resource | None,
    *,
    now: datetime,
    window: int,
) -> NoFollowUp | None:
    """Why this discharge opens no follow-up work, or None when it does."""
    evidence = death_evidence(encounter, plan, patient)
    if evidence:
        return NoFollowUp(DECEASED, f"No follow-up: the patient died ({evidence})", evidence)
    end = encounter["period"]["end"]
    if not may_be_on_or_after(end, now - timedelta(days=window)):
        return NoFollowUp(
            OUTSIDE_WINDOW,
            f"No follow-up: discharged {end}, more than {window} days before it was processed "
            f"(the follow-up window is {window} days)",
        )
    return None


def audit_event(
    encounter: Resource,
    patient_ref: str,
    decision: NoFollowUp,
    *,
    key: str,
    recorded: str,
) -> Resource:
    """The AuditEvent recording that a discharge opened no follow-up, and why."""
    enc_ref = f"Encounter/{encounter['id']}"
    return {
        "resourceType": "AuditEvent",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ID_SYSTEM}|{key}/no-follow-up")),
        "type": {"system": DICOM, "code": "110100", "display": "Application Activity"},
        "action": "E",
        "recorded": recorded,
        "outcome": "0",
        "outcomeDesc": decision.text,
        "agent": [
            {
                "type": {"coding": [{"system": DICOM, "code": "110150", "display": "Application"}]},
                "who": {"display": "fhircare discharge processing"},
                "requestor": False,
            }
        ],
        "source": {
            "observer": {"display": "fhircare"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": [
            {
                "what": {"reference": enc_ref},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "description": f"discharge not followed up: {decision.code}",
            },
            {
                "what": {"reference": patient_ref},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            },
        ],
    }
