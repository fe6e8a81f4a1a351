"""FHIR operations of the care-management cycle and of transitions of care.

Each handler calls one domain service on the caller's gated store (`call.store`: what it
reads must be the caller's to see, and every write it commits is checked against the
caller's scopes, whatever its type), publishes what was written on the bus (so e.g. a new
Observation moves goal progress) and answers with a Bundle of the written resources.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhircare.api.operations import OpCall, Operation, OperationRegistry
from fhircare.care import assessment, plans
from fhircare.fhir.datetimes import parse_datetime
from fhircare.fhir.errors import BadRequest
from fhircare.fhir.validation import check_id


def written_bundle(call: OpCall, resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A collection Bundle of the resources an operation wrote (or found)."""
    base = call.state.base_url
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r} for r in resources
        ],
    }


def publish(call: OpCall, written: list[dict[str, Any]]) -> None:
    call.svc.publish(written)


def _datetime(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_datetime(str(value))
    except ValueError as exc:
        raise BadRequest(f"Parameter {name} is not a dateTime: {value!r}") from exc


def extract(call: OpCall) -> dict[str, Any]:
    """QuestionnaireResponse/{id}/$extract: scores, SDOH Conditions, Goals, referrals, Tasks."""
    written = assessment.extract(call.store, call.id)
    publish(call, written)
    return written_bundle(call, written)


def apply(call: OpCall) -> tuple[dict[str, Any], int]:
    """PlanDefinition/{id}/$apply?subject=Patient/x: the patient's active CarePlan (R4
    returns the CarePlan; it references the Goals, Tasks and CareTeam written with it).
    `practitioner` is optional: without it the Tasks are unassigned (see plans.py)."""
    subject = call.param("subject")
    if not isinstance(subject, str) or not subject.startswith("Patient/"):
        raise BadRequest("$apply needs subject=Patient/{id}", expression=["subject"])
    store = call.store
    check_id(subject.split("/", 1)[1])
    store.read("Patient", subject.split("/", 1)[1])
    preferences: dict[str, Any] = {}
    goals = call.params("goal")
    declined = call.params("declinedActivity")
    if goals:
        preferences["goals"] = [str(g) for g in goals]
    if declined:
        preferences["declined_activities"] = [str(a) for a in declined]
    program = call.param("programKind") or "long-term"
    written = plans.apply_plan_definition(
        store,
        call.id,
        subject,
        preferences=preferences or None,
        practitioner_ref=_reference_param(
            call, "practitioner", ("Practitioner", "PractitionerRole")
        ),
        organization_ref=_reference_param(call, "organization", ("Organization",)),
        care_manager_ref=call.state.settings.care_manager,
        encounter_ref=call.param("encounter"),
        program_kind=program,
        episode_end=_datetime(call.param("episodeEnd"), "episodeEnd"),
    )
    publish(call, written)
    return written[0], 201


def _reference_param(call: OpCall, name: str, types: tuple[str, ...]) -> str | None:
    """A reference parameter as 'Type/id' (a string or a valueReference), of given types."""
    value = call.param(name)
    if isinstance(value, dict):
        value = value.get("reference")
    if value is None:
        return None
    if not isinstance(value, str) or value.split("/")[0] not in types or value.count("/") != 1:
        raise BadRequest(
            f"$apply {name} must be a reference to {' or '.join(types)}, not {str(value)[:60]!r}",
            expression=[name],
        )
    check_id(value.split("/", 1)[1])
    return value


def reconcile_medications(call: OpCall) -> dict[str, Any]:
    """Encounter/{id}/$reconcile-medications: List, DetectedIssues and Tasks."""
    from fhircare.transitions import discharge

    store = call.store
    store.read("Encounter", call.id)
    bundle = discharge.reconcile_encounter(
        store, call.id, base_url=call.state.base_url, care_manager=call.state.settings.care_manager
    )
    publish(call, [e["resource"] for e in bundle.get("entry") or []])
    return bundle


def process_message(call: OpCall) -> dict[str, Any]:
    """$process-message: Da Vinci Unsolicited Notifications (admit, transfer, discharge)."""
    from fhircare.transitions import notifications

    call.access.require_system("$process-message")
    if not isinstance(call.body, dict):
        raise BadRequest("$process-message needs a message Bundle")
    return notifications.process_message(
        call.store,
        call.body,
        commit_fn=call.svc.commit_prepared,
        care_manager=call.state.settings.care_manager,
    )


def register(ops: OperationRegistry) -> None:
    ops.add(
        Operation(
            "extract",
            extract,
            "instance",
            ("QuestionnaireResponse",),
            description="Derive scores, SDOH conditions, goals and referrals",
        )
    )
    ops.add(
        Operation(
            "apply",
            apply,
            "instance",
            ("PlanDefinition",),
            description="Create a patient's active CarePlan from a template",
        )
    )
    ops.add(
        Operation(
            "reconcile-medications",
            reconcile_medications,
            "instance",
            ("Encounter",),
            description="Reconcile medications around a discharge",
        )
    )
    ops.add(
        Operation(
            "process-message",
            process_message,
            "system",
            description="Process a FHIR message (Da Vinci notifications)",
        )
    )
