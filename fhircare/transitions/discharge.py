"""Discharge processing: medication reconciliation, LACE readmission risk, transitional-care
Tasks and the care plan, written in ONE atomic commit with the "processed" marker.

Idempotency. A discharge is processed once per signature (Encounter id, period.end,
discharge disposition), stored as meta `discharge.<encounter-id>` in the same commit as the
outputs, so a crash leaves either everything or nothing. A changed signature (a cancelled
and re-sent discharge, a corrected time) runs again without duplicating: every output has a
deterministic id (uuid5 of its identifier) and is written only when absent; machine outputs
(List, MedicationStatement, DetectedIssue, Observation, Provenance) are refreshed when their
content changed; a Task is never overwritten (a person may have worked on it), and nothing
deleted by a person is re-created.

Plans (mappings/transitions.yaml, by discharge disposition):
* home (home, home health, left against advice, unknown): TCM Tasks: interactive contact and
  medication review within 2 business days, book the visit, face-to-face visit within 7
  (high complexity) or 14 (moderate) calendar days; PlanDefinition `transitional-care`;
* snf / other facility: hand-off and medication list to the facility, and draft Tasks that
  start when the patient leaves it (TCM starts then); PlanDefinition `transitional-care-snf`;
* none (expired): no reconciliation, no Tasks: only the marker.
An active CarePlan gets the new Tasks as activities (new version + Provenance, same commit);
without one, the plan's PlanDefinition is applied in the same commit, its contact, review and
visit Tasks taken over by the business-day Tasks above.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from fhircare.care import plans, revisions
from fhircare.care.assessment import care_manager as find_care_manager
from fhircare.care.common import (
    CARE_TASK,
    codings_of,
    fhir_datetime,
    mapping,
    parse_datetime,
    utcnow,
    with_profile,
)
from fhircare.care.tasks import TERMINAL as TERMINAL_TASK
from fhircare.fhir.errors import FhirError, NotFound, Unprocessable
from fhircare.fhir.references import parse_local, rewrite_references
from fhircare.observability.events import reported_discharge
from fhircare.services.bus import MessageBus
from fhircare.store.base import Store, WriteOp
from fhircare.transitions import discharge_close as close
from fhircare.transitions import discharge_gate as gate
from fhircare.transitions import discharge_marker as marker_mod
from fhircare.transitions import lace as lace_mod
from fhircare.transitions.business_days import (
    business_deadline,
    calendar_deadline,
    parse_holidays,
)
from fhircare.transitions.medrec import reconcile
from fhircare.transitions.medrec_fhir import ID_SYSTEM as MEDREC_ID_SYSTEM
from fhircare.transitions.medrec_fhir import build_outputs
from fhircare.transitions.precision import may_be_on_or_after

commit_with_marker = marker_mod.commit_with_marker

log = logging.getLogger("fhircare.discharge")

Resource = dict[str, Any]

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ID_SYSTEM = "http://fhircare.org/fhir/sid/transitions"
MEDREC_MARKER = "medrec.{}"
DISCHARGE_MARKER = "discharge.{}"
MED_TYPES = ("MedicationRequest", "MedicationStatement", "List")
_VOLATILE = frozenset(
    {
        "meta",
        "issued",
        "recorded",
        "date",
        "dateAsserted",
        "identifiedDateTime",
        "authoredOn",
        "lastModified",
    }
)
DEFERRED_NOTE = "Starts when the patient leaves the facility (the TCM period begins then)."


def _config() -> dict[str, Any]:
    return mapping("transitions")


def deterministic_id(system: str, value: str) -> str:
    """The id of an output: uuid5 of its identifier (`system|value`)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{system}|{value}"))


# ---- recognising a discharge ------------------------------------------------------------


def _class_codes(encounter: Resource) -> set[str]:
    cls = encounter.get("class")
    items = cls if isinstance(cls, list) else [cls or {}]
    return {c.get("code") for c in items if c.get("system", ACT_CODE) == ACT_CODE}


def is_discharge(encounter: Resource) -> bool:
    """A finished inpatient, emergency or observation Encounter with a period.end."""
    return (
        encounter.get("resourceType") == "Encounter"
        and encounter.get("status") == "finished"
        and bool((encounter.get("period") or {}).get("end"))
        and bool(_class_codes(encounter) & set(_config()["discharge_classes"]))
    )


def _disposition(encounter: Resource) -> Resource:
    return (encounter.get("hospitalization") or {}).get("dischargeDisposition") or {}


def disposition_plan(encounter: Resource) -> str:
    """home | snf | facility | none, from the discharge disposition's first known coding."""
    cfg = _config()
    table = cfg["dispositions"]
    for system, code in codings_of(_disposition(encounter)):
        plan = (table.get(system) or {}).get(code)
        if plan:
            return str(plan)
    return str(cfg["unknown_plan"])


def signature(encounter: Resource) -> str:
    """What makes a discharge event distinct: id, period.end and the disposition codes."""
    codes = sorted(f"{s}|{c}" for s, c in codings_of(_disposition(encounter)))
    end = (encounter.get("period") or {}).get("end", "")
    return f"{encounter.get('id')}|{end}|{','.join(codes)}"


def _patient_ref(encounter: Resource) -> str:
    ref = (encounter.get("subject") or {}).get("reference") or ""
    local = parse_local(ref)
    if local is None or local[0] != "Patient":
        raise Unprocessable(
            f"Encounter/{encounter.get('id')} has no Patient subject", expression=["subject"]
        )
    return f"Patient/{local[1]}"


# ---- writing outputs once --------------------------------------------------------------


def _content(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _content(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_content(v) for v in value]
    return value


def _upsert_ops(store: Store, resources: list[Resource]) -> list[WriteOp]:
    """Create absent outputs; refresh changed machine outputs; never touch Tasks or
    anything that was deleted."""
    ops: list[WriteOp] = []
    for r in resources:
        rtype, rid = r["resourceType"], r["id"]
        version = store.current_version(rtype, rid)
        if version is None:
            ops.append(WriteOp("update", rtype, id=rid, resource=r))
            continue
        if rtype == "Task" or not store.exists(rtype, rid):
            continue
        if _content(store.read(rtype, rid)) != _content(r):
            ops.append(WriteOp("update", rtype, id=rid, resource=r, if_match=version))
    return ops


def _written(results: list[Any]) -> list[Resource]:
    return [r.resource for r in results if r.resource is not None]


def requester(encounter: Resource, owner: str | None) -> Resource:
    """Who asks for the follow-up: the care manager, else the discharging organisation, else
    the service itself (fhircare-task requires an owner or a requester)."""
    if owner:
        return {"reference": owner}
    provider = (encounter.get("serviceProvider") or {}).get("reference")
    if provider:
        return {"reference": provider}
    return {"display": "fhircare discharge processing"}


# ---- 1. medication reconciliation --------------------------------------------------------


def _own_output(resource: Resource) -> bool:
    return any(
        i.get("system") in (MEDREC_ID_SYSTEM, ID_SYSTEM) for i in resource.get("identifier") or []
    )


def medication_outputs(
    store: Store,
    encounter: Resource,
    patient_ref: str,
    *,
    owner: str | None,
    now: datetime,
    holidays: frozenset[date] = frozenset(),
    with_tasks: bool = True,
    episode: int = 1,
) -> tuple[list[Resource], bool]:
    """The reconciliation's List, DetectedIssues, Tasks and MedicationStatements with
    deterministic ids (of the discharge `episode`) and resolved references; and whether an
    issue is high severity."""
    inputs: list[Resource] = []
    for rtype in MED_TYPES:
        inputs += [r for r in store.search(rtype, [("patient", patient_ref)]) if not _own_output(r)]

    def resolve(ref: str) -> Resource | None:
        local = parse_local(ref)
        if local is None:
            return None
        try:
            return store.read(local[0], local[1])
        except FhirError:
            return None

    result = reconcile(inputs, encounter, resolve=resolve)
    enc_ref = f"Encounter/{encounter['id']}"
    pairs = build_outputs(result, patient_ref, enc_ref, now=fhir_datetime(now))
    ids: dict[str, str] = {}
    for full, r in pairs:
        rid = full.removeprefix("urn:uuid:")
        if episode > 1:
            ident = r["identifier"][0]
            ident["value"] = marker_mod.episode_value(ident["value"], episode)
            rid = deterministic_id(ident["system"], ident["value"])
        r["id"] = rid
        ids[full] = f"{r['resourceType']}/{rid}"
    end_text = (encounter.get("period") or {}).get("end")
    due = business_deadline(parse_datetime(end_text) if end_text else now, 2, holidays)
    out: list[Resource] = []
    for _, r in pairs:
        rewrite_references(r, ids.get)
        if r["resourceType"] == "Task":
            if not with_tasks:
                continue
            r["lastModified"] = r["authoredOn"]
            r["restriction"] = {"period": {"end": due.isoformat()}}
            r["requester"] = requester(encounter, owner)
            if owner:
                r["owner"] = {"reference": owner}
            with_profile(r, "fhircare-task")  # keeps the medrec-encounter tag
        out.append(r)
    high = any(i.severity == _config()["complexity"]["high_issue_severity"] for i in result.issues)
    return out, high


# ---- 3. follow-up Tasks --------------------------------------------------------------------


def follow_up_value(encounter_id: str, task_key: str, episode: int = 1) -> str:
    """The identifier value of a follow-up Task."""
    return marker_mod.episode_value(f"{encounter_id}/follow-up/{task_key}", episode)


def _due(spec: Resource, end: datetime, complexity: str, holidays: frozenset[date]) -> str | None:
    due = spec.get("due") or {}
    if "business_days" in due:
        return business_deadline(end, int(due["business_days"]), holidays).isoformat()
    if "calendar_days" in due:
        days = due["calendar_days"]
        n = days[complexity] if isinstance(days, dict) else days
        return calendar_deadline(end, int(n)).isoformat()
    return None


def follow_up_tasks(
    encounter: Resource,
    patient_ref: str,
    plan: str,
    *,
    complexity: str,
    owner: str | None,
    careplan_ref: str | None,
    now: datetime,
    holidays: frozenset[date] = frozenset(),
    episode: int = 1,
) -> dict[str, Resource]:
    """The plan's follow-up Tasks by task key (deterministic ids, per discharge episode)."""
    cfg = _config()
    enc_id = encounter["id"]
    end = parse_datetime(encounter["period"]["end"])
    priority = cfg["complexity"]["task_priority"][complexity]
    out: dict[str, Resource] = {}
    for key in cfg["plans"][plan]["tasks"]:
        spec = cfg["tasks"][key]
        value = follow_up_value(enc_id, key, episode)
        task: Resource = {
            "resourceType": "Task",
            "id": deterministic_id(ID_SYSTEM, value),
            "identifier": [{"system": ID_SYSTEM, "value": value}],
            "status": "draft" if spec.get("deferred") else "requested",
            "intent": "order",
            "priority": priority,
            "code": {
                "coding": [{"system": CARE_TASK, "code": spec["code"]}],
                "text": spec["text"],
            },
            "description": spec["text"],
            "for": {"reference": patient_ref},
            "encounter": {"reference": f"Encounter/{enc_id}"},
            "authoredOn": fhir_datetime(now),
            "lastModified": fhir_datetime(now),
        }
        if careplan_ref:
            task["basedOn"] = [{"reference": careplan_ref}]
            task["focus"] = {"reference": careplan_ref}
        task["requester"] = requester(encounter, owner)
        if owner:
            task["owner"] = {"reference": owner}
        due = None if spec.get("deferred") else _due(spec, end, complexity, holidays)
        if due:
            task["restriction"] = {"period": {"end": due}}
        if spec.get("deferred"):
            task["note"] = [{"text": DEFERRED_NOTE}]
        out[key] = with_profile(task, "fhircare-task")
    return out


# ---- 5. the care plan ----------------------------------------------------------------------


def active_careplan(store: Store, patient_ref: str) -> Resource | None:
    """The patient's active CarePlan: a transitional-care one first, else the newest."""
    found = store.search("CarePlan", [("patient", patient_ref), ("status", "active")])
    if not found:
        return None

    def key(cp: Resource) -> tuple[bool, str]:
        tcm = any("transitional-care" in c for c in cp.get("instantiatesCanonical") or [])
        return tcm, cp.get("created") or (cp.get("meta") or {}).get("lastUpdated", "")

    return max(found, key=key)


def _local_exists(store: Store, ref: str | None) -> bool:
    local = parse_local(ref or "")
    return local is not None and store.exists(local[0], local[1])


def _apply_plan(
    store: Store,
    encounter: Resource,
    patient_ref: str,
    plan: str,
    tasks: dict[str, Resource],
    extra_tasks: list[Resource],
    *,
    owner: str,
    now: datetime,
) -> list[Resource]:
    """The PlanDefinition's CarePlan and resources, with the follow-up Tasks taking over the
    PlanDefinition's own Tasks for the same actions and deferred actions made draft."""
    cfg = _config()
    pd_id = cfg["plans"][plan]["plan_definition"]
    end = parse_datetime(encounter["period"]["end"])
    made = plans.plan_definition_resources(
        store,
        pd_id,
        patient_ref,
        practitioner_ref=owner,
        encounter_ref=f"Encounter/{encounter['id']}",
        program_kind="episode",
        episode_end=max(end + timedelta(days=30), now + timedelta(days=1)),
        now=now,
    )
    careplan, rest = made[0], made[1:]
    careplan_ref = f"CarePlan/{careplan['id']}"
    by_ref = {f"{r['resourceType']}/{r['id']}": r for r in rest}
    takeover = {
        cfg["tasks"][k]["action"]: t for k, t in tasks.items() if cfg["tasks"][k].get("action")
    }
    deferred = set(cfg["plans"][plan]["defer_actions"])
    dropped: set[str] = set()
    for activity in careplan.get("activity") or []:
        aid = activity.get("id")
        target = (activity.get("reference") or {}).get("reference")
        if aid in takeover and target in by_ref:
            mine = takeover[aid]
            old = by_ref[target]
            if old.get("instantiatesCanonical"):
                mine["instantiatesCanonical"] = old["instantiatesCanonical"]
            dropped.add(target)
            activity["reference"] = {"reference": f"Task/{mine['id']}"}
        elif aid in deferred and target in by_ref:
            for r in rest:
                linked = {x.get("reference") for x in [r.get("focus") or {}, *r.get("basedOn", [])]}
                if f"{r['resourceType']}/{r['id']}" == target or (
                    r["resourceType"] == "Task" and target in linked
                ):
                    r["status"] = "draft"
                    r.pop("restriction", None)
                    r.setdefault("note", []).append({"text": DEFERRED_NOTE})
    linked_now = {
        (a.get("reference") or {}).get("reference") for a in careplan.get("activity") or []
    }
    for task in [*tasks.values(), *extra_tasks]:
        ref = f"Task/{task['id']}"
        task["basedOn"] = [{"reference": careplan_ref}]
        if task.get("focus") is None or task["focus"].get("reference", "").startswith("CarePlan/"):
            task["focus"] = {"reference": careplan_ref}
        if ref not in linked_now:
            careplan.setdefault("activity", []).append({"reference": {"reference": ref}})
    rest = [r for r in rest if f"{r['resourceType']}/{r['id']}" not in dropped]
    shown = {f"Task/{t['id']}": t for t in [*tasks.values(), *extra_tasks]}
    shown.update({f"{r['resourceType']}/{r['id']}": r for r in rest})
    careplan["text"] = plans.narrative(careplan, shown)
    return [careplan, *rest]


def _revise_plan_ops(
    store: Store,
    careplan: Resource,
    new_tasks: list[Resource],
    *,
    author: str | None,
    now: datetime,
    encounter_id: str,
) -> list[WriteOp]:
    """A new CarePlan version listing the new Tasks as activities, plus its Provenance."""
    present = {(a.get("reference") or {}).get("reference") for a in careplan.get("activity") or []}
    added = [
        {"reference": {"reference": f"Task/{t['id']}"}}
        for t in new_tasks
        if f"Task/{t['id']}" not in present
    ]
    if not added:
        return []
    who = author if _local_exists(store, author) else None
    who = who or (careplan.get("author") or {}).get("reference")
    if not _local_exists(store, who):
        log.warning("CarePlan/%s not revised: no author for the Provenance", careplan["id"])
        return []
    assert who is not None
    return revisions.revision_ops(
        store,
        careplan["id"],
        {"activity": [*(careplan.get("activity") or []), *added]},
        author=who,
        if_match=careplan["meta"]["versionId"],
        now=now,
        reason=f"Transitional-care follow-up after discharge (Encounter/{encounter_id})",
    )


# ---- the whole discharge ------------------------------------------------------------------


def _owner(store: Store, patient_ref: str, care_manager: str | None) -> str | None:
    for candidate in (care_manager, find_care_manager(store, patient_ref)):
        if candidate and _local_exists(store, candidate):
            return candidate
        if candidate:
            log.warning("the configured care manager is not in the store; ignored")
    return None


def _read_local(store: Store, ref: str) -> Resource | None:
    local = parse_local(ref)
    if local is None or not store.exists(local[0], local[1]):
        return None
    try:
        return store.read(local[0], local[1])
    except FhirError:
        return None


def _still_open(store: Store, enc_id: str, tasks: dict[str, Resource], episode: int) -> None:
    """Put back, in place of a new Task, the Task of an earlier episode that is still open
    (a person kept working on it through a cancelled discharge): never two of one kind."""
    for task_key in list(tasks):
        for earlier in range(episode - 1, 0, -1):
            tid = deterministic_id(ID_SYSTEM, follow_up_value(enc_id, task_key, earlier))
            old = _read_local(store, f"Task/{tid}")
            if old is not None and old.get("status") not in TERMINAL_TASK:
                tasks[task_key] = old
                break


def _no_follow_up(
    store: Store,
    encounter: Resource,
    patient_ref: str,
    patient: Resource | None,
    decision: gate.NoFollowUp,
    record: Resource,
    *,
    care_manager: str | None,
    at: datetime,
) -> list[Resource]:
    """Record why a discharge opens no follow-up (marker, AuditEvent, log); after a death,
    close what earlier discharges of the patient still have open."""
    enc_id = encounter["id"]
    key = marker_mod.episode_key(enc_id, int(record["episode"]))
    event = gate.audit_event(encounter, patient_ref, decision, key=key, recorded=fhir_datetime(at))
    ops: list[WriteOp] = []
    if not store.exists("AuditEvent", event["id"]):
        ops.append(WriteOp("create", "AuditEvent", id=event["id"], resource=event, keep_id=True))
    meta: dict[str, Any] = {}
    if decision.code == gate.DECEASED and patient is not None:
        recorded = gate.recorded_death(patient) is not None
        closed, meta = close.death_ops(
            store,
            patient,
            decision.evidence,
            cause_ref=close.versioned(patient if recorded else encounter),
            owner=_owner(store, patient_ref, care_manager),
            now=at,
        )
        ops += closed.ops
        # this visit's own follow-up, opened before the death was known, is closed with the
        # others; its marker keeps what it opened and closed
        own = meta.pop(marker_mod.key(enc_id), None)
        if own is not None:
            record.update({k: own[k] for k in ("opened", "deceased", "closed")})
    record.update(
        {"state": marker_mod.NO_FOLLOW_UP, "reason": {"code": decision.code, "text": decision.text}}
    )
    meta[marker_mod.key(enc_id)] = record
    log.info("discharge processed: no follow-up (%s)", decision.code)
    return _written(commit_with_marker(store, ops, meta))


@reported_discharge  # one log line and one metric per discharge handled
def process_discharge(
    store: Store,
    encounter: Resource,
    *,
    care_manager: str | None = None,
    now: datetime | None = None,
    window_days: int | None = None,
) -> list[Resource]:
    """Process a discharge once per signature; returns the resources written ([] when the
    encounter is not a discharge or this signature was already processed).

    A patient who died, or a discharge older than the follow-up window (`window_days`, else
    `follow_up_window_days` of mappings/transitions.yaml), opens no follow-up: the marker and
    an AuditEvent say why. After a cancel, the next discharge is a new episode."""
    if not is_discharge(encounter):
        return []
    at = utcnow(now)
    enc_id = encounter["id"]
    key = marker_mod.key(enc_id)
    sig = signature(encounter)
    marker = marker_mod.read(store, enc_id)
    if marker_mod.is_current(marker, sig):
        return []
    episode = marker_mod.episode_for(marker)
    patient_ref = _patient_ref(encounter)
    plan = disposition_plan(encounter)
    record: Resource = {
        "signature": sig,
        "processed": fhir_datetime(at),
        "plan": plan,
        "state": marker_mod.OPEN,
        "episode": episode,
    }
    patient = _read_local(store, patient_ref)
    decision = gate.no_follow_up(
        encounter, plan, patient, now=at, window=gate.window_days(window_days)
    )
    if decision is not None:
        return _no_follow_up(
            store,
            encounter,
            patient_ref,
            patient,
            decision,
            record,
            care_manager=care_manager,
            at=at,
        )

    cfg = _config()
    holidays = parse_holidays(cfg.get("holidays") or [])
    owner = _owner(store, patient_ref, care_manager)

    # 1. medication reconciliation
    med_outputs, high_issue = medication_outputs(
        store, encounter, patient_ref, owner=owner, now=at, holidays=holidays, episode=episode
    )
    # 2. readmission risk
    score = lace_mod.assess(store, encounter, patient_ref)
    obs = _in_episode(lace_mod.observation(score, encounter, patient_ref, now=at), episode)
    prov = lace_mod.provenance(score, obs, now=at)
    complexity = "high" if score.risk == "high" or high_issue else "moderate"
    record.update({"lace": score.total, "complexity": complexity})

    # 3 + 5. follow-up Tasks and the care plan
    existing_plan = active_careplan(store, patient_ref)
    careplan_ref = f"CarePlan/{existing_plan['id']}" if existing_plan else None
    tasks = follow_up_tasks(
        encounter,
        patient_ref,
        plan,
        complexity=complexity,
        owner=owner,
        careplan_ref=careplan_ref,
        now=at,
        holidays=holidays,
        episode=episode,
    )
    if episode > 1:
        _still_open(store, enc_id, tasks, episode)
    med_tasks = [r for r in med_outputs if r["resourceType"] == "Task"]
    others = [r for r in med_outputs if r["resourceType"] != "Task"] + [obs, prov]
    plan_ops: list[WriteOp] = []
    plan_resources: list[Resource] = []
    if existing_plan is None and owner and cfg["plans"][plan]["plan_definition"]:
        plan_resources = _apply_plan(
            store, encounter, patient_ref, plan, tasks, med_tasks, owner=owner, now=at
        )
        plan_ops = [
            WriteOp("create", r["resourceType"], id=r["id"], resource=r, keep_id=True)
            for r in plan_resources
        ]
    elif existing_plan is None:
        log.info("no care manager known: follow-up Tasks unassigned, no CarePlan")
    else:
        for t in med_tasks:
            t["basedOn"] = [{"reference": careplan_ref}]
    all_tasks = [*tasks.values(), *med_tasks]
    output_ops = _upsert_ops(store, [*others, *all_tasks])
    if existing_plan is not None:
        created = {op.id for op in output_ops if op.resource_type == "Task"}
        new_tasks = [t for t in all_tasks if t["id"] in created]
        plan_ops = _revise_plan_ops(
            store, existing_plan, new_tasks, author=owner, now=at, encounter_id=enc_id
        )
    opened = [*others, *all_tasks, *plan_resources]
    # a no-follow-up marker (death, outside the window) opened nothing
    previous = marker.get("opened", []) if marker and marker.get("episode") == episode else []
    refs = [*previous, *(f"{r['resourceType']}/{r['id']}" for r in opened)]
    record["opened"] = list(dict.fromkeys(refs))
    results = commit_with_marker(store, [*output_ops, *plan_ops], {key: record})
    return _written(results)


def _in_episode(resource: Resource, episode: int) -> Resource:
    """An output with its identifier (and so its id) moved to the discharge episode."""
    if episode > 1:
        ident = resource["identifier"][0]
        ident["value"] = marker_mod.episode_value(ident["value"], episode)
        resource["id"] = deterministic_id(ident["system"], ident["value"])
    return resource


# ---- cancels and deaths -----------------------------------------------------------------------


def undo_discharge(
    store: Store,
    encounter: Resource,
    *,
    care_manager: str | None = None,
    now: datetime | None = None,
) -> list[Resource]:
    """Close what the discharge of an Encounter that is no longer finished opened (A13 cancel
    discharge, A11 cancel admit, a PUT back to in-progress); [] when there is nothing to undo.
    Tasks not started are cancelled with a reason, Tasks worked on get a review Task, the
    reconciliation List is retired: see `discharge_close`."""
    if encounter.get("status") not in close.REOPENED:
        return []
    marker = marker_mod.read(store, encounter["id"])
    if marker is None or marker["state"] == marker_mod.CANCELLED:
        return []
    at = utcnow(now)
    patient_ref = _patient_ref(encounter)
    closed, record = close.undo_ops(
        store, encounter, marker, owner=_owner(store, patient_ref, care_manager), now=at
    )
    results = commit_with_marker(store, closed.ops, {marker_mod.key(encounter["id"]): record})
    log.info(
        "discharge cancelled: %d task(s) cancelled, %d flagged for review, %d record(s) withdrawn",
        closed.cancelled,
        closed.reviews,
        closed.withdrawn,
    )
    return _written(results)


def close_for_death(
    store: Store,
    patient: Resource,
    *,
    care_manager: str | None = None,
    now: datetime | None = None,
) -> list[Resource]:
    """A patient recorded deceased after discharges were processed: their open follow-up is
    cancelled with the reason (work in progress is flagged for review instead)."""
    evidence = gate.recorded_death(patient)
    if evidence is None:
        return []
    at = utcnow(now)
    patient_ref = f"Patient/{patient['id']}"
    closed, markers = close.death_ops(
        store,
        patient,
        evidence,
        cause_ref=close.versioned(patient),
        owner=_owner(store, patient_ref, care_manager),
        now=at,
    )
    if not markers:
        return []
    results = commit_with_marker(store, closed.ops, markers)
    log.info(
        "patient deceased: %d follow-up task(s) cancelled, %d flagged for review",
        closed.cancelled,
        closed.reviews,
    )
    return _written(results)


def find_reopened(store: Store) -> list[Resource]:
    """Encounters whose discharge was handled but that are no longer finished."""
    return close.find_reopened(store)


def outcome_text(store: Store, encounter_id: str) -> str:
    """One line saying what happened to an Encounter's discharge (for ACKs and responses)."""
    return marker_mod.outcome_text(marker_mod.read(store, encounter_id))


# ---- $reconcile-medications -----------------------------------------------------------------


def reconcile_encounter(
    store: Store,
    encounter_id: str,
    *,
    now: datetime | None = None,
    care_manager: str | None = None,
    base_url: str | None = None,
) -> Resource:
    """Encounter/{id}/$reconcile-medications: step 1 only (List, DetectedIssues, Tasks,
    MedicationStatements), idempotent like `process_discharge`.

    Returns a `collection` Bundle of the reconciliation's resources as stored (written now or
    before); `fullUrl` is set when `base_url` is given.
    """
    encounter = store.read("Encounter", encounter_id)
    if not (encounter.get("period") or {}).get("end") and encounter.get("status") != "finished":
        log.info("Encounter/%s reconciled before its discharge", encounter_id)
    at = utcnow(now)
    patient_ref = _patient_ref(encounter)
    holidays = parse_holidays(_config().get("holidays") or [])
    owner = _owner(store, patient_ref, care_manager)
    episode = marker_mod.episode_for(marker_mod.read(store, encounter_id))
    outputs, _ = medication_outputs(
        store, encounter, patient_ref, owner=owner, now=at, holidays=holidays, episode=episode
    )
    existing_plan = active_careplan(store, patient_ref)
    if existing_plan is not None:
        for r in outputs:
            if r["resourceType"] == "Task":
                r["basedOn"] = [{"reference": f"CarePlan/{existing_plan['id']}"}]
    ops = _upsert_ops(store, outputs)
    meta = {MEDREC_MARKER.format(encounter_id): {"processed": fhir_datetime(at)}}
    if ops:
        commit_with_marker(store, ops, meta)
    stored = []
    for r in outputs:
        try:
            stored.append(store.read(r["resourceType"], r["id"]))
        except (NotFound, FhirError):
            continue  # deleted by a person: left deleted
    entries = []
    for r in stored:
        entry: Resource = {"resource": r}
        if base_url:
            entry["fullUrl"] = f"{base_url.rstrip('/')}/{r['resourceType']}/{r['id']}"
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "collection", "total": len(entries), "entry": entries}


# ---- event wiring ---------------------------------------------------------------------------


def register(
    bus: MessageBus,
    *,
    care_manager: str | None = None,
    window_days: int | None = None,
    clock: Callable[[], datetime] | None = None,
) -> None:
    """Run discharge processing after every Encounter write that is a discharge, undo it after
    one that is no longer finished, and close open follow-up when a Patient is recorded
    deceased. `clock` pins the time (tests); default the current time."""

    def now() -> datetime | None:
        return clock() if clock else None

    def on_encounter(store: Store, encounter: Resource) -> list[Resource]:
        if is_discharge(encounter):
            return process_discharge(
                store, encounter, care_manager=care_manager, now=now(), window_days=window_days
            )
        return undo_discharge(store, encounter, care_manager=care_manager, now=now())

    def on_patient(store: Store, patient: Resource) -> list[Resource]:
        return close_for_death(store, patient, care_manager=care_manager, now=now())

    on_encounter.__qualname__ = "discharge.on_encounter"
    on_patient.__qualname__ = "discharge.on_patient"
    bus.on("Encounter", on_encounter)
    bus.on("Patient", on_patient)


def find_unprocessed(store: Store, *, since: datetime | str | None = None) -> list[Resource]:
    """Finished discharges whose current signature was not handled, or was cancelled since
    (e.g. after a sync pull, so a missed Subscription notification does not mean a missed
    discharge). `since` skips those that surely ended before it (compared at precision)."""
    floor = parse_datetime(since) if isinstance(since, str) else (utcnow(since) if since else None)
    out = []
    for enc in store.search("Encounter", [("status", "finished")]):
        if not is_discharge(enc):
            continue
        if floor is not None and not may_be_on_or_after(enc["period"]["end"], floor):
            continue
        if not marker_mod.is_current(marker_mod.read(store, enc["id"]), signature(enc)):
            out.append(copy.deepcopy(enc))
    return sorted(out, key=lambda e: parse_datetime(e["period"]["end"]))
