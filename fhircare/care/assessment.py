"""Assessment: score completed QuestionnaireResponses and `$extract` what they imply.

* PHQ-9 / PHQ-2: total-score Observation (LOINC total code, category survey, derivedFrom
  the response version, severity as interpretation in our phq-severity CodeSystem);
  PHQ-9 item 9 above 0 opens an urgent Task (same-day suicide risk assessment) owned by
  the patient's care manager when known.
* AHC HRSN core: per positive social-needs domain an SDOH health-concern Condition,
  a proposed Goal and a referral (ServiceRequest + fulfilment Task, `referrals.build_referral`);
  the HITS safety total as an Observation.
* Care intake: ADL-dependence and support Observations; barriers become SDOH domains.

Rules and codes live in `mappings/assessment.yaml` and `mappings/sdoh.yaml`. Everything
one response version implies is written in ONE commit, with ids derived from the response
id and a slot name, so a replay writes nothing new and a concurrent duplicate fails whole.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fhircare.care import definitions
from fhircare.care.questionnaires import resolve_questionnaire, validate_response
from fhircare.care.referrals import build_referral, find_performer
from fhircare.fhir.errors import Conflict, FhirError, NotFound, Unprocessable
from fhircare.fhir.references import rewrite_references
from fhircare.store.base import Store, WriteOp

log = logging.getLogger("fhircare.care.assessment")

Resource = dict[str, Any]
BASE = "http://fhircare.org/fhir"
QR = "QuestionnaireResponse"
ORDINAL_URLS = (
    "http://hl7.org/fhir/StructureDefinition/ordinalValue",
    "http://hl7.org/fhir/StructureDefinition/itemWeight",
)
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
UCUM = "http://unitsofmeasure.org"
ID_NAMESPACE = uuid.UUID("5b0f7c3e-2d4a-4e0b-9a51-6f1c2e8d4a10")
META_KEY = "assessment.extract/"
EXTRACT_STATUSES = ("completed", "amended")


def profile(profile_id: str) -> str:
    return f"{BASE}/StructureDefinition/{profile_id}"


# ---- answers ----------------------------------------------------------------------------------


@dataclass
class Answers:
    """The answers of one response, by linkId and by item code ("system|code")."""

    by_link: dict[str, list[Resource]]
    by_code: dict[str, list[Resource]]
    link_of_code: dict[str, str]
    weights: dict[str, dict[tuple[str | None, str | None], Decimal]]  # linkId -> option -> score

    def of(self, item: dict[str, str]) -> list[Resource]:
        """Answers to an item named `{linkId}` or `{system, code}` in a mapping."""
        if "linkId" in item:
            return self.by_link.get(item["linkId"], [])
        return self.by_code.get(f"{item['system']}|{item['code']}", [])

    def link(self, item: dict[str, str]) -> str | None:
        return item.get("linkId") or self.link_of_code.get(f"{item['system']}|{item['code']}")

    def codes(self, item: dict[str, str]) -> list[str]:
        return [a["valueCoding"].get("code") for a in self.of(item) if "valueCoding" in a]


def collect_answers(qr: Resource, questionnaire: Resource) -> Answers:
    """Index a response's answers by linkId and by the Questionnaire item codes (items
    without codes are taken as LOINC-coded when their linkId is a LOINC code, '/x' or 'x')."""
    codes: dict[str, list[str]] = {}
    weights: dict[str, dict[tuple[str | None, str | None], Decimal]] = {}

    def walk_q(items: list[Resource]) -> None:
        for item in items:
            link = str(item.get("linkId"))
            codes[link] = [f"{c.get('system')}|{c.get('code')}" for c in item.get("code") or []]
            for option in item.get("answerOption") or []:
                coding = option.get("valueCoding")
                for ext in option.get("extension") or []:
                    if coding and ext.get("url") in ORDINAL_URLS and "valueDecimal" in ext:
                        key = (coding.get("system"), coding.get("code"))
                        weights.setdefault(link, {})[key] = Decimal(str(ext["valueDecimal"]))
            walk_q(item.get("item") or [])

    walk_q(questionnaire.get("item") or [])
    by_link: dict[str, list[Resource]] = {}
    by_code: dict[str, list[Resource]] = {}
    link_of_code: dict[str, str] = {}

    def walk_r(items: list[Resource]) -> None:
        for item in items:
            link = str(item.get("linkId"))
            answers = item.get("answer") or []
            by_link.setdefault(link, []).extend(answers)
            for key in codes.get(link) or [f"http://loinc.org|{link.lstrip('/')}"]:
                by_code.setdefault(key, []).extend(answers)
                link_of_code.setdefault(key, link)
            walk_r(item.get("item") or [])
            for answer in answers:
                walk_r(answer.get("item") or [])

    walk_r(qr.get("item") or [])
    return Answers(by_link, by_code, link_of_code, weights)


def item_score(
    answers: Answers, item: dict[str, str], fallback: dict[str, int], expression: str
) -> Decimal:
    """The score of a single-answer scored item (ordinalValue, else the mapping's table)."""
    found = answers.of(item)
    if len(found) != 1 or "valueCoding" not in found[0]:
        raise Unprocessable(
            f"Scored item {item.get('code') or item.get('linkId')} needs exactly one coded answer",
            expression=[expression],
        )
    coding = found[0]["valueCoding"]
    table = answers.weights.get(answers.link(item) or "", {})
    for key in ((coding.get("system"), coding.get("code")), (None, coding.get("code"))):
        if key in table:
            return table[key]
    for (_, code), value in table.items():
        if code == coding.get("code"):
            return value
    if coding.get("code") in fallback:
        return Decimal(fallback[coding["code"]])
    raise Unprocessable(
        f"Answer '{coding.get('code')}' of item {item.get('code')} has no score",
        expression=[expression],
    )


def instrument_of(questionnaire: Resource) -> str | None:
    """Which instrument of `mappings/assessment.yaml` a Questionnaire is, or None."""
    url = str(questionnaire.get("url") or "")
    q_codes = {(c.get("system"), c.get("code")) for c in questionnaire.get("code") or []}
    for name, spec in definitions.mapping("assessment")["instruments"].items():
        if url in spec.get("urls", []):
            return name
        if any((c["system"], c["code"]) in q_codes for c in spec.get("codes", [])):
            return name
    return None


def severity(total: int, bands: list[dict[str, Any]]) -> dict[str, Any]:
    """The band holding `total`; Unprocessable when out of range."""
    for band in bands:
        if band["min"] <= total <= band["max"]:
            return band
    raise Unprocessable(f"Total score {total} is outside the instrument's range")


# ---- building outputs -------------------------------------------------------------------------


@dataclass
class _Out:
    slot: str
    resource: Resource
    updatable: bool = False  # re-derived (and updated) for a new version of the response


@dataclass
class _Ctx:
    store: Store
    qr: Resource
    questionnaire: Resource
    answers: Answers
    now: datetime

    @property
    def qr_id(self) -> str:
        return str(self.qr["id"])

    @property
    def patient(self) -> str:
        return str((self.qr.get("subject") or {}).get("reference") or "")

    @property
    def version_ref(self) -> str:
        vid = (self.qr.get("meta") or {}).get("versionId")
        base = f"{QR}/{self.qr_id}"
        return f"{base}/_history/{vid}" if vid else base

    def rid(self, slot: str) -> str:
        return str(uuid.uuid5(ID_NAMESPACE, f"{QR}/{self.qr_id}#{slot}"))

    def instant(self, delta: timedelta | None = None) -> str:
        at = self.now + delta if delta else self.now
        return at.isoformat(timespec="seconds").replace("+00:00", "Z")

    def effective(self) -> str:
        return str(self.qr.get("authored") or self.instant())

    def common(self, resource: Resource) -> Resource:
        encounter = self.qr.get("encounter")
        if encounter and resource["resourceType"] in ("Observation", "Condition", "Task"):
            resource["encounter"] = dict(encounter)
        return resource


def _coding(spec: dict[str, Any]) -> Resource:
    return {k: spec[k] for k in ("system", "code", "display") if spec.get(k)}


def _score_observation(
    ctx: _Ctx, total_code: dict[str, Any], value: int, categories: list[Resource]
) -> Resource:
    obs: Resource = {
        "resourceType": "Observation",
        "meta": {"profile": [profile("fhircare-observation-screening")]},
        "status": "final",
        "category": categories,
        "code": {"coding": [_coding(total_code)], "text": total_code.get("display")},
        "subject": {"reference": ctx.patient},
        "effectiveDateTime": ctx.effective(),
        "issued": ctx.instant(),
        "valueQuantity": {"value": value, "unit": "{score}", "system": UCUM, "code": "{score}"},
        "derivedFrom": [{"reference": ctx.version_ref}],
    }
    return ctx.common(obs)


def _survey(*extra: Resource) -> list[Resource]:
    return [
        {"coding": [{"system": OBS_CATEGORY, "code": "survey", "display": "Survey"}]},
        *extra,
    ]


def _phq(ctx: _Ctx, name: str) -> list[_Out]:
    cfg = definitions.mapping("assessment")
    spec = cfg["instruments"][name]
    fallback = cfg["answer_scores"]
    scores = [item_score(ctx.answers, item, fallback, f"{QR}.item") for item in spec["items"]]
    total = int(sum(scores))
    band = severity(total, spec["bands"])
    obs = _score_observation(ctx, spec["total"], total, _survey())
    interp = [{"system": cfg["severity_system"], "code": band["code"], "display": band["display"]}]
    if name == "phq-2":
        positive = band["code"] == "positive"
        interp.append(
            {
                "system": INTERPRETATION,
                "code": "POS" if positive else "NEG",
                "display": "Positive" if positive else "Negative",
            }
        )
    obs["interpretation"] = [{"coding": interp, "text": band["display"]}]
    outs = [_Out(f"{name}-total", obs, updatable=True)]
    item9 = spec.get("item9")
    if item9:
        score9 = item_score(ctx.answers, item9["item"], fallback, f"{QR}.item")
        if score9 > item9["positive_above"]:
            total_ref = f"Observation/{ctx.rid(f'{name}-total')}"
            outs.append(_Out("phq-9-item9-task", _urgent_task(ctx, total_ref)))
    return outs


def care_manager(store: Store, patient_ref: str) -> str | None:
    """The patient's care manager: a CareTeam member in a care-manager role, else the
    first Patient.generalPractitioner, else None (unassigned)."""
    roles = definitions.mapping("assessment")["urgent_task"]["care_manager_roles"]
    teams = store.search("CareTeam", [("patient", patient_ref), ("status", "active")])
    for team in sorted(teams, key=lambda t: t.get("id", "")):
        for part in team.get("participant") or []:
            member = (part.get("member") or {}).get("reference", "")
            names = [
                str(x).lower()
                for role in part.get("role") or []
                for x in [role.get("text"), *(c.get("display") for c in role.get("coding") or [])]
                if x
            ]
            if member.startswith(("Practitioner/", "PractitionerRole/")) and any(
                r in n for n in names for r in roles
            ):
                return member
    kind, _, pid = patient_ref.partition("/")
    if kind == "Patient" and pid and store.exists("Patient", pid):
        for gp in store.read("Patient", pid).get("generalPractitioner") or []:
            ref = gp.get("reference", "")
            if ref.startswith(("Practitioner/", "PractitionerRole/")):
                return ref
    return None


def _requester(ctx: _Ctx) -> Resource:
    author = ctx.qr.get("author")
    if author and author.get("reference"):
        return {"reference": author["reference"]}
    return {"display": "fhircare assessment"}


def _urgent_task(ctx: _Ctx, total_ref: str) -> Resource:
    spec = definitions.mapping("assessment")["urgent_task"]
    task: Resource = {
        "resourceType": "Task",
        "meta": {"profile": [profile("fhircare-task")]},
        "status": "requested",
        "intent": "order",
        "priority": spec["priority"],
        "code": {"coding": [_coding(spec["code"])], "text": spec["code"]["display"]},
        "description": spec["description"],
        "focus": {"reference": ctx.version_ref},
        "for": {"reference": ctx.patient},
        "authoredOn": ctx.instant(),
        "lastModified": ctx.instant(),
        "requester": _requester(ctx),
        "reasonReference": {"reference": total_ref},
        "restriction": {"period": {"end": ctx.instant(timedelta(hours=spec["due_within_hours"]))}},
    }
    owner = care_manager(ctx.store, ctx.patient)
    if owner:
        task["owner"] = {"reference": owner}
    return ctx.common(task)


def _positive_domains(ctx: _Ctx, name: str) -> list[str]:
    spec = definitions.mapping("sdoh")["instruments"].get(name) or {}
    found: list[str] = []
    for rule in spec.get("answers", []):
        for code in ctx.answers.codes(rule["item"]):
            domain = rule["positive"].get(code)
            if domain and domain not in found:
                found.append(domain)
    return found


def _hits(ctx: _Ctx, name: str) -> tuple[list[_Out], list[str]]:
    spec = definitions.mapping("sdoh")["instruments"].get(name) or {}
    outs: list[_Out] = []
    domains: list[str] = []
    for rule in spec.get("scores", []):
        if not all(ctx.answers.of(item) for item in rule["items"]):
            continue
        total = int(
            sum(
                item_score(ctx.answers, item, rule["answer_scores"], f"{QR}.item")
                for item in rule["items"]
            )
        )
        positive = total >= rule["positive_at_least"]
        sdoh_cat = {
            "coding": [
                _coding(c) for c in definitions.mapping("sdoh")["condition"]["sdoh_category"]
            ]
        }
        slot = f"{rule['domain']}-total"
        obs = _score_observation(ctx, rule["total"], total, _survey(sdoh_cat))
        obs["interpretation"] = [
            {
                "coding": [
                    {
                        "system": INTERPRETATION,
                        "code": "POS" if positive else "NEG",
                        "display": "Positive" if positive else "Negative",
                    }
                ]
            }
        ]
        outs.append(_Out(slot, obs, updatable=True))
        if positive:
            domains.append(rule["domain"])
    return outs, domains


def _existing_concern(ctx: _Ctx, domain: str, own_id: str) -> bool:
    """True when the patient already has an active SDOH Condition for the domain that this
    response did not create (no duplicate concerns, goals or referrals)."""
    system = definitions.mapping("sdoh")["systems"]["domain"]
    found = ctx.store.search(
        "Condition", [("patient", ctx.patient), ("code", f"{system}|{domain}")]
    )
    return any(
        c.get("id") != own_id
        and any(
            x.get("code") == "active" for x in (c.get("clinicalStatus") or {}).get("coding", [])
        )
        for c in found
    )


def _sdoh_domain(ctx: _Ctx, domain: str) -> list[_Out]:
    cfg = definitions.mapping("sdoh")
    spec = cfg["domains"][domain]
    cond_slot = f"sdoh-{domain}-condition"
    cond_id = ctx.rid(cond_slot)
    if _existing_concern(ctx, domain, cond_id):
        log.debug("an active concern exists already: no duplicate Condition")
        return []
    ccfg = cfg["condition"]
    condition: Resource = {
        "resourceType": "Condition",
        "meta": {"profile": [profile("fhircare-condition")]},
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active", "display": "Active"}]},
        "verificationStatus": {
            "coding": [{"system": VERIFICATION, "code": ccfg["verification_status"]}]
        },
        "category": [
            {"coding": [_coding(c) for c in ccfg["category"]]},
            {"coding": [_coding(c) for c in ccfg["sdoh_category"]]},
        ],
        "code": {
            "coding": [
                {"system": cfg["systems"]["domain"], "code": domain, "display": spec["display"]},
                *(_coding(c) for c in spec.get("codings") or []),
            ],
            "text": spec["display"],
        },
        "subject": {"reference": ctx.patient},
        "recordedDate": ctx.instant(),
        "evidence": [{"detail": [{"reference": f"{QR}/{ctx.qr_id}"}]}],
    }
    outs = [_Out(cond_slot, ctx.common(condition))]
    cond_ref = f"Condition/{cond_id}"
    g = spec["goal"]
    goal: Resource = {
        "resourceType": "Goal",
        "meta": {"profile": [profile("fhircare-goal")]},
        "lifecycleStatus": "proposed",
        "category": [{"coding": [_coding(c) for c in ccfg["sdoh_category"]]}],
        "description": {
            "coding": [
                *(_coding(c) for c in g.get("codings") or []),
                {"system": cfg["systems"]["goal"], "code": g["code"], "display": g["text"]},
            ],
            "text": g["text"],
        },
        "subject": {"reference": ctx.patient},
        "startDate": ctx.now.date().isoformat(),
        "target": [{"dueDate": (ctx.now + timedelta(days=g["due_days"])).date().isoformat()}],
        "addresses": [{"reference": cond_ref}],
    }
    outs.append(_Out(f"sdoh-{domain}-goal", goal))
    if spec.get("referral"):
        outs.extend(_referral(ctx, domain, spec["referral"], cond_ref))
    return outs


def _referral(ctx: _Ctx, domain: str, kind: str, cond_ref: str) -> list[_Out]:
    requester = (ctx.qr.get("author") or {}).get("reference")
    pairs = build_referral(
        ctx.patient,
        kind,
        reason_refs=[cond_ref],
        requester=requester,
        now=ctx.now,
        performer=find_performer(ctx.store, kind),
    )
    renamed: dict[str, str] = {}
    outs: list[_Out] = []
    for i, (full_url, resource) in enumerate(pairs):
        slot = f"sdoh-{domain}-referral-{i}"
        old = f"{resource['resourceType']}/{resource.get('id')}"
        new = f"{resource['resourceType']}/{ctx.rid(slot)}"
        renamed[old] = renamed[full_url] = new
        outs.append(_Out(slot, resource))
    for out in outs:
        rewrite_references(out.resource, lambda r: renamed.get(r))
        if out.resource["resourceType"] == "Task" and not out.resource.get("requester"):
            out.resource["requester"] = _requester(ctx)
    return outs


def _care_intake(ctx: _Ctx) -> list[_Out]:
    cfg = definitions.mapping("assessment")["care_intake"]
    outs: list[_Out] = []
    adl = cfg["adl_dependence"]
    codes = ctx.answers.codes({"linkId": adl["item"]})
    if codes:
        count = len([c for c in codes if c != adl["none_answer"]])
        functional = {
            "coding": [
                {
                    "system": US_CORE_CATEGORY,
                    "code": "functional-status",
                    "display": "Functional Status",
                }
            ]
        }
        obs = _score_observation(ctx, adl["code"], count, _survey(functional))
        obs.pop("valueQuantity")
        obs["valueInteger"] = count
        outs.append(_Out("adl-dependence", obs, updatable=True))
    support = cfg["support_available"]
    answers = ctx.answers.of({"linkId": support["item"]})
    if answers and "valueBoolean" in answers[0]:
        obs = _score_observation(ctx, support["code"], 0, _survey())
        obs.pop("valueQuantity")
        obs["valueBoolean"] = answers[0]["valueBoolean"]
        outs.append(_Out("support-available", obs, updatable=True))
    return outs


def _plan(ctx: _Ctx, name: str) -> list[_Out]:
    """Every output a response of instrument `name` implies (not yet written)."""
    outs: list[_Out] = []
    domains: list[str] = []
    if name in ("phq-9", "phq-2"):
        outs.extend(_phq(ctx, name))
    if name == "care-intake":
        outs.extend(_care_intake(ctx))
    hits, positive = _hits(ctx, name)
    outs.extend(hits)
    domains.extend(d for d in _positive_domains(ctx, name) if d not in domains)
    domains.extend(d for d in positive if d not in domains)
    for domain in domains:
        outs.extend(_sdoh_domain(ctx, domain))
    return outs


# ---- extract ----------------------------------------------------------------------------------


def _now(now: datetime | None) -> datetime:
    at = now or datetime.now(UTC)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).replace(microsecond=0)


def extract(store: Store, qr_id: str, *, now: datetime | None = None) -> list[Resource]:
    """Score and extract a completed/amended QuestionnaireResponse; returns the outputs.

    Idempotent: a response version already extracted returns the earlier outputs without
    writing. Raises NotFound (response or Questionnaire unknown) and Unprocessable (not
    completed, no Patient subject, invalid against its Questionnaire).
    """
    return _extract(store, qr_id, now)[0]


def _extract(
    store: Store, qr_id: str, now: datetime | None
) -> tuple[list[Resource], list[Resource]]:
    """(every output, the outputs written by this call)."""
    qr = store.read(QR, qr_id)
    vid = str((qr.get("meta") or {}).get("versionId") or "")
    done = store.get_meta(META_KEY + qr_id)
    if done and done.get("version") == vid:
        return [_read(store, ref) for ref in done["outputs"]], []
    if qr.get("status") not in EXTRACT_STATUSES:
        raise Unprocessable(
            f"Only completed or amended responses are extracted (status is {qr.get('status')})",
            expression=[f"{QR}.status"],
        )
    if not str((qr.get("subject") or {}).get("reference") or "").startswith("Patient/"):
        raise Unprocessable("The response has no Patient subject", expression=[f"{QR}.subject"])
    questionnaire = resolve_questionnaire(store, str(qr.get("questionnaire") or ""))
    validate_response(qr, questionnaire)
    name = instrument_of(questionnaire)
    if name is None:
        return [], []
    ctx = _Ctx(store, qr, questionnaire, collect_answers(qr, questionnaire), _now(now))
    try:
        outputs, written = _write(ctx, _plan(ctx, name))
    except Conflict:  # a concurrent extract of this response won the race: use its outputs
        outputs, written = _write(ctx, _plan(ctx, name))
    refs = [f"{r['resourceType']}/{r['id']}" for r in outputs]
    store.set_meta(META_KEY + qr_id, {"version": vid, "outputs": refs})
    return outputs, written


def _read(store: Store, ref: str) -> Resource:
    rtype, _, rid = ref.partition("/")
    return store.read(rtype, rid)


def _write(ctx: _Ctx, outs: list[_Out]) -> tuple[list[Resource], list[Resource]]:
    """Create what is missing, update re-derived scores of an older version: one commit."""
    ops: list[WriteOp] = []
    result: list[Resource | None] = []
    for out in outs:
        rid = ctx.rid(out.slot)
        out.resource["id"] = rid
        rtype = out.resource["resourceType"]
        if not ctx.store.exists(rtype, rid):
            ops.append(WriteOp("create", rtype, id=rid, resource=out.resource, keep_id=True))
            result.append(None)
            continue
        current = ctx.store.read(rtype, rid)
        stale = out.updatable and current.get("derivedFrom") != out.resource.get("derivedFrom")
        if stale:
            out.resource["status"] = "amended"
            version = (current.get("meta") or {}).get("versionId")
            ops.append(WriteOp("update", rtype, id=rid, resource=out.resource, if_match=version))
            result.append(None)
        else:
            result.append(current)
    written = [r.resource for r in ctx.store.commit(ops)] if ops else []
    fresh = iter(written)
    return [r if r is not None else next(fresh) for r in result], written  # type: ignore[misc]


# ---- event hook -------------------------------------------------------------------------------


def on_questionnaire_response(store: Store, resource: Resource) -> list[Resource]:
    """Bus handler: extract completed/amended responses; returns what it newly wrote."""
    if resource.get("status") not in EXTRACT_STATUSES or not resource.get("id"):
        return []
    try:
        return _extract(store, resource["id"], None)[1]
    except FhirError as exc:
        log.warning("not extracted: %s/%s (%s)", QR, resource["id"], type(exc).__name__)
        return []


def check_response(store: Store, old: Resource | None, new: Resource) -> None:
    """Bus check before a QuestionnaireResponse write: it must conform to its Questionnaire
    (Unprocessable otherwise). Responses to Questionnaires this server does not know pass."""
    canonical = new.get("questionnaire")
    if not canonical:
        return
    try:
        questionnaire = resolve_questionnaire(store, str(canonical))
    except NotFound:
        return
    validate_response(new, questionnaire)


def register(bus: Any) -> None:
    """Wire the assessment check and handler on the message bus."""
    bus.check(QR, check_response)
    bus.on(QR, on_questionnaire_response)
