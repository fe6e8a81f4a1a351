"""Care plans from PlanDefinitions: an `$apply` that produces an ACTIVE plan.

FHIR `$apply` returns a proposal (a CarePlan/RequestGroup the caller may then persist).
`apply_plan_definition` goes further on purpose: the care manager applies a template *with*
the patient's choices, so the result is the agreed plan, written in ONE commit:

* CarePlan (status active, intent plan, category US Core `assess-plan` + program kind,
  instantiatesCanonical the PlanDefinition, period, careTeam, addresses the patient's
  matching chronic Conditions, goal, activity);
* Goals (lifecycleStatus active) from PlanDefinition.goal: target measure, detail and
  dueDate = now + target.due;
* per action's ActivityDefinition: a Task (kind Task), a referral ServiceRequest + fulfilment
  Task (kind ServiceRequest), or an activity `detail` (education, kind CommunicationRequest);
* program Tasks from `mappings/programs.yaml` (consent/review for long-term care management;
  authorisation and utilisation review for episode-bound case management, whose plan has a
  period end);
* a CareTeam (reused when the patient already has an active one with this care manager).

Preferences: `goals` = the PlanDefinition goal ids the patient chose (default all; actions
serving only unchosen goals are left out); `declined_activities` = action ids the patient
declined: they are NOT created as Tasks/ServiceRequests but stay visible on the plan as an
activity `detail` with status `cancelled` and statusReason "Declined by patient", so the care
manager can revisit them. CarePlan.activity.id is the PlanDefinition action id.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any, Literal

from fhircare.care.common import (
    CARE_TASK,
    CAREPLAN_CATEGORY,
    CARETEAM_ROLE,
    ID_SYSTEM,
    PROGRAM_KIND,
    REFERRAL_KIND,
    SNOMED,
    Resource,
    add_duration,
    coding,
    commit,
    create_op,
    fhir_date,
    fhir_datetime,
    mapping,
    new_id,
    read_ref,
    split_ref,
    utcnow,
    with_profile,
)
from fhircare.care.education import education_detail
from fhircare.care.eligibility import matching_condition_keys
from fhircare.care.referrals import build_referral, find_performer
from fhircare.fhir.errors import NotFound, Unprocessable
from fhircare.store.base import Store

ProgramKind = Literal["long-term", "episode"]

ROLE_PATIENT = coding(SNOMED, "116154003", "Patient (person)")
ROLE_CAREGIVER = coding(SNOMED, "133932002", "Caregiver (person)")
ROLE_FAMILY = coding(SNOMED, "303071001", "Person in the family (person)")
ROLE_PCP = coding(SNOMED, "453231000124104", "Primary care provider")
ROLE_CARE_MANAGER = coding(CARETEAM_ROLE, "care-manager", "Care manager")
CARETEAM_LONGITUDINAL = coding(
    "http://loinc.org", "LA28865-6", "Longitudinal care-coordination focused care team"
)
DECLINED = "Declined by patient"


def load_plan_definition(store: Store, plan_definition_id: str) -> Resource:
    """The PlanDefinition by id from the store (profiles are loaded there at startup)."""
    try:
        return store.read("PlanDefinition", plan_definition_id)
    except NotFound:
        raise NotFound(
            f"PlanDefinition/{plan_definition_id} is not known", expression=["PlanDefinition"]
        ) from None


def _activity_definition(store: Store, url: str) -> Resource:
    found = store.search("ActivityDefinition", [("url", url.split("|")[0])])
    if not found:
        raise NotFound(f"ActivityDefinition {url} is not known", expression=["ActivityDefinition"])
    return found[0]


def _duration(value: Resource | None) -> tuple[float, str] | None:
    if not value:
        return None
    return float(value["value"]), value.get("code") or value.get("unit", "d")


def apply_plan_definition(
    store: Store,
    plan_definition_id: str,
    subject_ref: str,
    *,
    preferences: dict[str, Any] | None = None,
    practitioner_ref: str | None = None,
    organization_ref: str | None = None,
    care_manager_ref: str | None = None,
    encounter_ref: str | None = None,
    program_kind: ProgramKind = "long-term",
    episode_end: datetime | None = None,
    now: datetime | None = None,
) -> list[Resource]:
    """Apply a PlanDefinition to a patient; returns every resource written (CarePlan first).

    Raises NotFound (unknown PlanDefinition, ActivityDefinition or subject) and Unprocessable
    (bad reference, unknown preference ids, unknown program kind, nobody accountable).
    """
    resources = plan_definition_resources(
        store,
        plan_definition_id,
        subject_ref,
        preferences=preferences,
        practitioner_ref=practitioner_ref,
        organization_ref=organization_ref,
        care_manager_ref=care_manager_ref,
        encounter_ref=encounter_ref,
        program_kind=program_kind,
        episode_end=episode_end,
        now=now,
    )
    return commit(store, [create_op(r) for r in resources])


def plan_definition_resources(
    store: Store,
    plan_definition_id: str,
    subject_ref: str,
    *,
    preferences: dict[str, Any] | None = None,
    practitioner_ref: str | None = None,
    organization_ref: str | None = None,
    care_manager_ref: str | None = None,
    encounter_ref: str | None = None,
    program_kind: ProgramKind = "long-term",
    episode_end: datetime | None = None,
    now: datetime | None = None,
) -> list[Resource]:
    """What `apply_plan_definition` writes (CarePlan first, ids assigned), without writing it,
    so a caller can commit it together with other writes.

    `practitioner_ref` (R4 `$apply` `practitioner`, optional) applies the plan: it authors
    the plan and owns its Tasks. Without it the Tasks are unassigned (no owner: the patient's
    care team sees them on its worklist) and are requested by whoever is accountable: the
    `organization_ref`, else the patient's care manager (active CareTeam, else general
    practitioner), else `care_manager_ref` (FHIRCARE_CARE_MANAGER), else the patient's
    managing organization. With nobody accountable the plan is refused (Unprocessable).
    """
    at = utcnow(now)
    pd = load_plan_definition(store, plan_definition_id)
    _, patient_id = split_ref(subject_ref, "Patient")
    try:
        patient = store.read("Patient", patient_id)
    except NotFound:
        raise NotFound(f"Subject {subject_ref} is not known", expression=["subject"]) from None
    programs = mapping("programs")["kinds"]
    if program_kind not in programs:
        raise Unprocessable(
            f"Unknown program kind '{program_kind}' (known: {', '.join(programs)})",
            expression=["programKind"],
        )
    program = programs[program_kind]
    for given in (practitioner_ref, organization_ref):
        if given:
            read_ref(store, given)
    assignee = practitioner_ref
    manager = _accountable(store, patient, practitioner_ref, organization_ref, care_manager_ref)
    if encounter_ref:
        read_ref(store, encounter_ref, "Encounter")

    prefs = preferences or {}
    goal_defs = {g.get("id"): g for g in pd.get("goal") or []}
    chosen = set(prefs.get("goals") or goal_defs)
    unknown = sorted(chosen - set(goal_defs))
    if unknown:
        raise Unprocessable(
            f"Unknown goal id(s) {', '.join(unknown)} for PlanDefinition/{pd['id']}",
            expression=["preferences.goals"],
        )
    actions = pd.get("action") or []
    declined = set(prefs.get("declined_activities") or [])
    unknown = sorted(declined - {a.get("id") for a in actions})
    if unknown:
        raise Unprocessable(
            f"Unknown activity id(s) {', '.join(unknown)} for PlanDefinition/{pd['id']}",
            expression=["preferences.declined_activities"],
        )

    careplan_id = new_id()
    careplan_ref = f"CarePlan/{careplan_id}"
    to_create: list[Resource] = []

    # Goals
    goal_refs: dict[str, str] = {}
    addresses = _addresses(store, subject_ref, pd["id"])
    for gid, gdef in goal_defs.items():
        if gid not in chosen:
            continue
        goal = _goal(pd, gdef, subject_ref, _expresser(manager), addresses, at)
        goal_refs[gid] = f"Goal/{goal['id']}"
        to_create.append(goal)

    # Activities
    activities: list[Resource] = []
    for action in actions:
        served = action.get("goalId") or []
        if served and not set(served) & chosen:
            continue
        ad = _activity_definition(store, action["definitionCanonical"])
        activity, made = _activity(
            store,
            action,
            ad,
            subject_ref,
            manager,
            assignee,
            careplan_ref,
            encounter_ref,
            at,
            declined=action.get("id") in declined,
        )
        activities.append(activity)
        to_create.extend(made)

    # Program Tasks
    period: Resource = {"start": fhir_datetime(at)}
    if program_kind == "episode":
        end = episode_end or add_duration(at, *_duration(program["default_duration"]))  # type: ignore[misc]
        if utcnow(end) <= at:
            raise Unprocessable(
                "episode_end must be after the plan start", expression=["period.end"]
            )
        period["end"] = fhir_datetime(utcnow(end))
    for spec in program.get("required_tasks") or []:
        task = _program_task(spec, subject_ref, manager, assignee, careplan_ref, encounter_ref, at)
        activities.append(
            {"id": f"program-{spec['code']}", "reference": {"reference": f"Task/{task['id']}"}}
        )
        to_create.append(task)

    # CareTeam
    team, team_new = _care_team(store, patient, assignee or manager, at, reuse_any=not assignee)
    if team_new:
        to_create.extend(team_new)

    careplan: Resource = {
        "resourceType": "CarePlan",
        "id": careplan_id,
        "identifier": [{"system": f"{ID_SYSTEM}/careplan", "value": careplan_id}],
        "instantiatesCanonical": [pd.get("url") or f"PlanDefinition/{pd['id']}"],
        "status": "active",
        "intent": "plan",
        "category": [
            {
                "coding": [
                    coding(CAREPLAN_CATEGORY, "assess-plan", "Assessment and Plan of Treatment")
                ]
            },
            {"coding": [coding(PROGRAM_KIND, program_kind, program["display"])]},
        ],
        "title": pd.get("title") or pd["id"],
        "description": pd.get("description"),
        "subject": {"reference": subject_ref},
        "period": period,
        "created": fhir_datetime(at),
        "author": {"reference": manager},
        "careTeam": [{"reference": team}],
        "goal": [{"reference": r} for r in goal_refs.values()],
        "activity": activities,
    }
    if encounter_ref:
        careplan["encounter"] = {"reference": encounter_ref}
    if addresses:
        careplan["addresses"] = [{"reference": r} for r in addresses]
    if not careplan["description"]:
        del careplan["description"]
    if not careplan["goal"]:
        del careplan["goal"]
    careplan["text"] = narrative(careplan, {r: g for r, g in _by_ref(to_create).items()})
    with_profile(careplan, "fhircare-careplan")
    return [careplan, *to_create]


def _by_ref(resources: list[Resource]) -> dict[str, Resource]:
    return {f"{r['resourceType']}/{r['id']}": r for r in resources}


def _accountable(
    store: Store,
    patient: Resource,
    practitioner_ref: str | None,
    organization_ref: str | None,
    care_manager_ref: str | None,
) -> str:
    """Who authors the plan and requests its work (see `plan_definition_resources`)."""
    from fhircare.care.tasks import care_manager_of

    found = (
        practitioner_ref
        or organization_ref
        or care_manager_of(store, f"Patient/{patient['id']}")
        or care_manager_ref
        or (patient.get("managingOrganization") or {}).get("reference")
    )
    if not found:
        raise Unprocessable(
            "Nobody is accountable for this plan: give practitioner or organization, or set "
            "FHIRCARE_CARE_MANAGER, a care team, Patient.generalPractitioner or "
            "Patient.managingOrganization",
            expression=["practitioner"],
        )
    read_ref(store, found)
    return found


def _expresser(ref: str) -> str | None:
    """Goal.expressedBy takes a person (Patient, Practitioner, PractitionerRole,
    RelatedPerson), not an Organization."""
    return ref if ref.split("/")[0] != "Organization" else None


def _addresses(store: Store, subject_ref: str, plan_id: str) -> list[str]:
    """The patient's active Conditions of the chronic condition(s) this plan is for."""
    keys = {
        key
        for key, spec in mapping("chronic-conditions")["conditions"].items()
        if spec.get("plan") == plan_id
    }
    if not keys:
        return []
    out = []
    for cond in store.search("Condition", [("patient", subject_ref)]):
        status = {c for _, c in _codes(cond.get("clinicalStatus"))}
        if status and not status & {"active", "recurrence", "relapse"}:
            continue
        if matching_condition_keys(cond) & keys:
            out.append(f"Condition/{cond['id']}")
    return sorted(out)


def _codes(value: Any) -> list[tuple[str | None, str | None]]:
    from fhircare.care.common import codings_of

    return codings_of(value) if value else []


def _goal(
    pd: Resource,
    gdef: Resource,
    subject_ref: str,
    expressed_by: str | None,
    addresses: list[str],
    at: datetime,
) -> Resource:
    targets = []
    for t in gdef.get("target") or []:
        target: Resource = {}
        if "measure" in t:
            target["measure"] = t["measure"]
        for key in ("detailQuantity", "detailRange", "detailCodeableConcept"):
            if key in t:
                target[key] = t[key]
        due = _duration(t.get("due"))
        if due:
            target["dueDate"] = fhir_date(add_duration(at, *due))
        targets.append(target)
    goal: Resource = {
        "resourceType": "Goal",
        "id": new_id(),
        "identifier": [
            {"system": f"{ID_SYSTEM}/plandefinition-goal", "value": f"{pd['id']}/{gdef['id']}"}
        ],
        "lifecycleStatus": "active",
        "achievementStatus": {
            "coding": [
                coding(
                    "http://terminology.hl7.org/CodeSystem/goal-achievement",
                    "in-progress",
                    "In Progress",
                )
            ]
        },
        "description": gdef["description"],
        "subject": {"reference": subject_ref},
        "startDate": fhir_date(at),
    }
    if expressed_by:
        goal["expressedBy"] = {"reference": expressed_by}
    if gdef.get("priority"):
        goal["priority"] = gdef["priority"]
    if targets:
        goal["target"] = targets
    if addresses:
        goal["addresses"] = [{"reference": r} for r in addresses]
    return with_profile(goal, "fhircare-goal")


def _owner(ad: Resource, subject_ref: str, assignee: str | None) -> str | None:
    """The patient for self-care activities, else the practitioner applying the plan
    (None: unassigned, for the care team to pick up)."""
    types = {p.get("type") for p in ad.get("participant") or []}
    return subject_ref if types == {"patient"} else assignee


def _activity(
    store: Store,
    action: Resource,
    ad: Resource,
    subject_ref: str,
    manager: str,
    assignee: str | None,
    careplan_ref: str,
    encounter_ref: str | None,
    at: datetime,
    *,
    declined: bool,
) -> tuple[Resource, list[Resource]]:
    """The CarePlan.activity for an action and the resources it needs."""
    aid = action.get("id") or ad["id"]
    kind = ad.get("kind")
    if declined or kind not in ("Task", "ServiceRequest"):
        detail = education_detail(ad) if kind == "CommunicationRequest" else _plain_detail(ad)
        if declined:
            detail["status"] = "cancelled"
            detail["statusReason"] = {"text": DECLINED}
        return {"id": aid, "detail": detail}, []
    if kind == "ServiceRequest":
        kind_code = next(
            (c["code"] for c in ad["code"]["coding"] if c.get("system") == REFERRAL_KIND), None
        )
        if kind_code is None:
            raise Unprocessable(
                f"ActivityDefinition/{ad['id']} has no referral-kind coding",
                expression=["ActivityDefinition.code"],
            )
        pairs = build_referral(
            subject_ref,
            kind_code,
            requester=manager,
            now=at,
            performer=find_performer(store, kind_code),
            code={"coding": [c for c in ad["code"]["coding"]], "text": ad["code"].get("text")},
            encounter_ref=encounter_ref,
            based_on=[careplan_ref],
        )
        made = [r for _, r in pairs]
        sr = made[0]
        return {"id": aid, "reference": {"reference": f"ServiceRequest/{sr['id']}"}}, made
    due = _duration(ad.get("timingDuration"))
    task: Resource = {
        "resourceType": "Task",
        "id": new_id(),
        "instantiatesCanonical": ad["url"],
        "basedOn": [{"reference": careplan_ref}],
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": ad["code"],
        "description": ad.get("title") or ad.get("description"),
        "for": {"reference": subject_ref},
        "authoredOn": fhir_datetime(at),
        "lastModified": fhir_datetime(at),
        "requester": {"reference": manager},
    }
    owner = _owner(ad, subject_ref, assignee)
    if owner:
        task["owner"] = {"reference": owner}
    if ad.get("description"):
        task["note"] = [{"text": ad["description"]}]
    if encounter_ref:
        task["encounter"] = {"reference": encounter_ref}
    if due:
        task["restriction"] = {"period": {"end": fhir_datetime(add_duration(at, *due))}}
    with_profile(task, "fhircare-task")
    return {"id": aid, "reference": {"reference": f"Task/{task['id']}"}}, [task]


def _plain_detail(ad: Resource) -> Resource:
    detail: Resource = {
        "instantiatesCanonical": [ad["url"]],
        "status": "not-started",
        "description": ad.get("title") or ad.get("description") or ad["id"],
    }
    if ad.get("code"):
        detail["code"] = ad["code"]
    if ad.get("kind") in ("Task", "ServiceRequest", "CommunicationRequest", "Appointment"):
        detail["kind"] = ad["kind"]
    return detail


def _program_task(
    spec: Resource,
    subject_ref: str,
    manager: str,
    assignee: str | None,
    careplan_ref: str,
    encounter_ref: str | None,
    at: datetime,
) -> Resource:
    display = _care_task_display(spec["code"])
    task: Resource = {
        "resourceType": "Task",
        "id": new_id(),
        "basedOn": [{"reference": careplan_ref}],
        "focus": {"reference": careplan_ref},
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [coding(CARE_TASK, spec["code"], display)], "text": display},
        "description": display,
        "for": {"reference": subject_ref},
        "authoredOn": fhir_datetime(at),
        "lastModified": fhir_datetime(at),
        "requester": {"reference": manager},
        "restriction": {
            "period": {"end": fhir_datetime(add_duration(at, *_duration(spec["due"])))}  # type: ignore[misc]
        },
    }
    if assignee:
        task["owner"] = {"reference": assignee}
    if encounter_ref:
        task["encounter"] = {"reference": encounter_ref}
    return with_profile(task, "fhircare-task")


_CARE_TASK_DISPLAY = {
    "ccm-consent": "Obtain care-management consent",
    "care-plan-review": "Review care plan",
    "authorization": "Obtain authorization",
    "utilization-review": "Utilization review",
}


def _care_task_display(code: str) -> str:
    return _CARE_TASK_DISPLAY.get(code, code.replace("-", " ").capitalize())


def _care_team(
    store: Store, patient: Resource, manager: str, at: datetime, *, reuse_any: bool = False
) -> tuple[str, list[Resource]]:
    """The patient's active CareTeam with this care manager (with `reuse_any`, any active
    CareTeam of the patient), or a new one (+ RelatedPersons). An Organization manager is
    the new team's managing organization rather than a care-manager member."""
    patient_ref = f"Patient/{patient['id']}"
    teams = store.search("CareTeam", [("patient", patient_ref), ("status", "active")])
    if reuse_any and teams:
        return f"CareTeam/{sorted(teams, key=lambda t: t['id'])[0]['id']}", []
    for team in teams:
        for part in team.get("participant") or []:
            if (part.get("member") or {}).get("reference") == manager and any(
                (c.get("system"), c.get("code")) == (CARETEAM_ROLE, "care-manager")
                for r in part.get("role") or []
                for c in r.get("coding") or []
            ):
                return f"CareTeam/{team['id']}", []
    made: list[Resource] = []
    name = _name(patient)
    is_org = manager.startswith("Organization/")
    participants = (
        []
        if is_org
        else [
            {
                "role": [{"coding": [ROLE_CARE_MANAGER], "text": "Care manager"}],
                "member": {"reference": manager},
            }
        ]
    )
    participants += [
        {
            "role": [{"coding": [ROLE_PATIENT], "text": "Patient"}],
            "member": {"reference": patient_ref, "display": name}
            if name
            else {"reference": patient_ref},
        },
    ]
    for gp in patient.get("generalPractitioner") or []:
        gref = gp.get("reference") or ""
        if gref.startswith(("Practitioner/", "PractitionerRole/")) and gref != manager:
            participants.append(
                {
                    "role": [{"coding": [ROLE_PCP], "text": "Supervising provider"}],
                    "member": {"reference": gref},
                }
            )
            break
    existing = store.search("RelatedPerson", [("patient", patient_ref)])
    for contact in patient.get("contact") or []:
        rp_ref, new_rp = _related_person(contact, patient_ref, existing)
        if new_rp:
            made.append(new_rp)
        role = ROLE_CAREGIVER if _is_caregiver(contact) else ROLE_FAMILY
        participants.append({"role": [{"coding": [role]}], "member": {"reference": rp_ref}})
    team: Resource = {
        "resourceType": "CareTeam",
        "id": new_id(),
        "status": "active",
        "category": [{"coding": [CARETEAM_LONGITUDINAL]}],
        "name": f"Care team for {name}" if name else "Care team",
        "subject": {"reference": patient_ref},
        "period": {"start": fhir_datetime(at)},
        "participant": participants,
    }
    if is_org:
        team["managingOrganization"] = [{"reference": manager}]
    with_profile(team, "fhircare-careteam")
    return f"CareTeam/{team['id']}", [team, *made]


def _name(resource: Resource) -> str:
    for n in resource.get("name") or []:
        if n.get("text"):
            return n["text"]
        parts = [*(n.get("given") or []), n.get("family") or ""]
        text = " ".join(p for p in parts if p)
        if text:
            return text
    return ""


def _is_caregiver(contact: Resource) -> bool:
    texts = [
        (r.get("text") or "")
        + " "
        + " ".join(c.get("display") or "" for c in r.get("coding") or [])
        for r in contact.get("relationship") or []
    ]
    return any("caregiver" in t.lower() or "carer" in t.lower() for t in texts)


def _related_person(
    contact: Resource, patient_ref: str, existing: list[Resource]
) -> tuple[str, Resource | None]:
    cname = contact.get("name") or {}
    label = _name({"name": [cname]})
    for rp in existing:
        if label and _name(rp) == label:
            return f"RelatedPerson/{rp['id']}", None
    rp: Resource = {
        "resourceType": "RelatedPerson",
        "id": new_id(),
        "active": True,
        "patient": {"reference": patient_ref},
    }
    if contact.get("relationship"):
        rp["relationship"] = contact["relationship"]
    if cname:
        rp["name"] = [cname]
    for key in ("telecom", "address", "gender"):
        if contact.get(key):
            rp[key] = contact[key] if key != "address" else [contact[key]]
    with_profile(rp, "fhircare-relatedperson")
    return f"RelatedPerson/{rp['id']}", rp


def narrative(careplan: Resource, made: dict[str, Resource]) -> Resource:
    """A short generated XHTML narrative (US Core requires CarePlan.text)."""
    esc = html.escape
    goals = "".join(
        f"<li>{esc(made[g['reference']]['description'].get('text', ''))}</li>"
        for g in careplan.get("goal") or []
        if g["reference"] in made
    )
    acts = []
    for act in careplan.get("activity") or []:
        if "detail" in act:
            d = act["detail"]
            acts.append(f"<li>{esc(d.get('description', ''))} ({esc(d['status'])})</li>")
        else:
            r = made.get(act["reference"]["reference"], {})
            label = r.get("description") or (r.get("code") or {}).get("text") or act["id"]
            acts.append(f"<li>{esc(str(label))}</li>")
    div = (
        '<div xmlns="http://www.w3.org/1999/xhtml">'
        f"<p><b>{esc(careplan['title'])}</b> ({esc(careplan['status'])})</p>"
        + (f"<p>Goals</p><ul>{goals}</ul>" if goals else "")
        + (f"<p>Activities</p><ul>{''.join(acts)}</ul>" if acts else "")
        + "</div>"
    )
    return {"status": "generated", "div": div}
