"""What an ADT message keeps of the Patient and Encounter already stored for it.

An ADT message replaces the stored resources (conditional PUT on their identifiers), but
feeds leave out what they sent before, and an empty HL7 v2 field means "no news", not
"erase". Three facts must survive such a message:

* the admit time: an A13 (cancel discharge) or A03 without PV1-44 keeps `period.start`, and
  the discharge time is checked against it at the precision given;
* a discharge: only A13 (cancel discharge) and A11 (cancel admit) undo it; any other event
  without a discharge time (an A08 update, a late or repeated A01/A02) keeps the stored
  status, end and disposition, so follow-up work is not cancelled by accident;
* a death: a message without PID-29/30 does not bring a dead patient back to life (PID-30
  "N" alone is not trusted over a recorded death: correct it through the FHIR API).

Pure: the caller reads the stored resources and passes them in.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from fhircare.transitions.hl7v2 import AdtMessage
from fhircare.transitions.hl7v2_er7 import Hl7Error
from fhircare.transitions.precision import hl7_span, ordered_end, span

Resource = dict[str, Any]

CANCELS = frozenset({"cancel-discharge", "cancel-admit"})
DECEASED = ("deceasedBoolean", "deceasedDateTime")


def merge_stored(
    adt: AdtMessage, stored_patient: Resource | None, stored_encounter: Resource | None
) -> AdtMessage:
    """`adt` with its Patient and Encounter completed from the stored ones."""
    warnings = list(adt.warnings)
    patient = _patient(adt, stored_patient, warnings)
    encounter = _encounter(adt, stored_encounter, warnings)
    return dataclasses.replace(adt, patient=patient, encounter=encounter, warnings=tuple(warnings))


def _patient(adt: AdtMessage, stored: Resource | None, warnings: list[str]) -> Resource:
    patient = adt.patient
    if stored is None or not _is_deceased(stored) or _is_deceased(patient):
        return patient
    patient = copy.deepcopy(patient)
    patient.pop("deceasedBoolean", None)
    for key in DECEASED:
        if key in stored:
            patient[key] = stored[key]
    if adt.death_indicator == "N":
        warnings.append(
            "PID-30 says N but the patient is recorded deceased: the death is kept "
            "(correct it through the FHIR API if it was recorded in error)"
        )
    return patient


def _is_deceased(patient: Resource) -> bool:
    return patient.get("deceasedBoolean") is True or bool(patient.get("deceasedDateTime"))


def _encounter(adt: AdtMessage, stored: Resource | None, warnings: list[str]) -> Resource:
    if stored is None:
        return adt.encounter
    enc = copy.deepcopy(adt.encounter)
    period = dict(enc.get("period") or {})
    kept = stored.get("period") or {}
    if not period.get("start") and kept.get("start"):
        period["start"] = kept["start"]
        warnings.append("PV1-44 empty: the stored admit time is kept")
    if stored.get("status") == "finished" and adt.action not in CANCELS and not period.get("end"):
        enc["status"] = "finished"
        if kept.get("end"):
            period["end"] = kept["end"]
        disposition = (stored.get("hospitalization") or {}).get("dischargeDisposition")
        if disposition:
            enc.setdefault("hospitalization", {})["dischargeDisposition"] = disposition
        for loc in enc.get("location") or []:
            loc["status"] = "completed"
        warnings.append(
            f"{adt.trigger_event} without a discharge time: the stored discharge is kept "
            "(only A13 or A11 cancels a discharge)"
        )
    elif period.get("start") and period.get("end") and adt.discharge_time is not None:
        end = ordered_end(
            period["start"], span(period["start"]), period["end"], hl7_span(adt.discharge_time)
        )
        if end is None:
            raise Hl7Error(
                "discharge time (PV1-45) is before the admit time stored for this visit",
                "AE",
                segment="PV1",
                field=45,
                error_code="102",
            )
        if end != period["end"]:
            warnings.append("discharge time in the stored admit time's minute: stored as it")
        period["end"] = end
    if period:
        enc["period"] = period
    return enc
