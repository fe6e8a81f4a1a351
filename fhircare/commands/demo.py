"""`fhircare demo`: the care-management cycle on a sample patient, through the REST API.

It talks to a running server (`--server URL`, or the `fhircare serve` holding the data
folder) or to an in-process app on the data folder, with the same requests either way:
the sample record in one transaction, the intake, PHQ-9 and AHC HRSN responses (extracted
into scores, Conditions, Goals and referrals), eligibility, a diabetes care plan from its
PlanDefinition, the pantry referral rejected (an alternative is proposed), follow-up calls,
education, and a new HbA1c moving goal progress. Every resource made is printed with the
request that reads it. A second run finds the sample patient's plan and says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from fhircare.care import definitions
from fhircare.care.demo import CM, PATIENT, hba1c, responses, sample_record

Resource = dict[str, Any]
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
T2DM = "http://fhircare.org/fhir/PlanDefinition/t2dm"


class DemoError(Exception):
    """The server refused a step: the message names the step and the server's answer."""


@dataclass
class DemoReport:
    already_ran: bool = False
    made: list[str] = field(default_factory=list)  # "Type/id", in the order they were made
    steps: list[str] = field(default_factory=list)
    worklist: list[dict[str, Any]] = field(default_factory=list)

    def add(self, resources: list[Resource]) -> None:
        for r in resources:
            ref = f"{r['resourceType']}/{r['id']}"
            if ref not in self.made:
                self.made.append(ref)


class Api:
    """The few calls the demo makes, each checked (a refused step stops the demo)."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def send(self, method: str, path: str, step: str, **kwargs: Any) -> Any:
        headers = {**FHIR_JSON, **kwargs.pop("headers", {})}
        response = self.http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            raise DemoError(
                f"{step}: {method} {path} answered {response.status_code}: {_diagnostics(response)}"
            )
        return response.json() if response.content else None

    def search(self, rtype: str, step: str, **params: str) -> list[Resource]:
        bundle = self.send("GET", f"/fhir/{rtype}", step, params={**params, "_count": "200"})
        return [e["resource"] for e in bundle.get("entry") or [] if "resource" in e]


def _diagnostics(response: httpx.Response) -> str:
    try:
        issues = response.json().get("issue") or []
        return "; ".join(str(i.get("diagnostics", i.get("code"))) for i in issues)[:300]
    except ValueError:
        return response.text[:300]


def _resources(body: Any) -> list[Resource]:
    """What an operation answered: a Bundle's entries, or the resource itself."""
    if not isinstance(body, dict):
        return []
    if body.get("resourceType") == "Bundle":
        return [e["resource"] for e in body.get("entry") or [] if "resource" in e]
    return [body] if "id" in body else []


def _stamp(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


def _put_entry(resource: Resource) -> Resource:
    ref = f"{resource['resourceType']}/{resource['id']}"
    return {"fullUrl": ref, "resource": resource, "request": {"method": "PUT", "url": ref}}


def previous_run(api: Api) -> list[Resource] | None:
    """The demo's care plan when the demo already ran on this server, else None."""
    plans = api.search("CarePlan", "looking for an earlier run", subject=PATIENT)
    made = [p for p in plans if T2DM in (p.get("instantiatesCanonical") or [])]
    return made or None


def run_demo(http: httpx.Client, *, now: datetime | None = None) -> DemoReport:
    api = Api(http)
    report = DemoReport()
    earlier = previous_run(api)
    if earlier is not None:
        report.already_ran = True
        report.add(earlier)
        for rtype in ("Goal", "Task", "Observation", "Condition", "ServiceRequest"):
            report.add(api.search(rtype, "listing the earlier run", patient=PATIENT))
        return report
    at = (now or datetime.now(UTC)).replace(microsecond=0)

    # 1. the sample record (and the definitions, if the server was not seeded), one commit
    entries = [_put_entry(r) for r in sample_record(at)]
    if http.get("/fhir/PlanDefinition/t2dm", headers=FHIR_JSON).status_code == 404:
        entries = [_put_entry(r) for r in definitions.load_profiles_dir()] + entries
    api.send(
        "POST",
        "/fhir",
        "the sample record",
        json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
        headers={"Prefer": "return=representation"},
    )
    report.add(sample_record(at))
    report.steps.append("sample patient Dana Sample with type 2 diabetes and hypertension")
    # its stay ended 9 days ago: discharge processing opened the transitional-care follow-up
    stay = "Encounter/demo-admission"
    for rtype, params in (
        ("CareTeam", {"patient": PATIENT}),
        ("CarePlan", {"encounter": stay}),
        ("Task", {"encounter": stay}),
    ):
        report.add(api.search(rtype, "the discharge follow-up", **params))

    # 2. assessments: each completed response is extracted
    for qr in responses(PATIENT, at):
        api.send("PUT", f"/fhir/QuestionnaireResponse/{qr['id']}", qr["id"], json=qr)
        made = _resources(
            api.send("POST", f"/fhir/QuestionnaireResponse/{qr['id']}/$extract", qr["id"])
        )
        report.add([qr, *made])
        report.steps.append(f"{qr['id']}: resources extracted: {len(made)}")

    # 3. eligibility
    elig = api.send("GET", "/care/eligibility", "eligibility", params={"patient": PATIENT})
    report.steps.append(
        f"eligibility: CCM {'yes' if elig['ccmEligible'] else 'no'}, tier {elig['tier']}; "
        + "; ".join(elig["reasons"])
    )

    # 4. the care plan, the dietitian referral declined
    applied = _resources(
        api.send(
            "POST",
            "/fhir/PlanDefinition/t2dm/$apply",
            "the care plan",
            params={
                "subject": PATIENT,
                "practitioner": CM,
                "declinedActivity": "dietitian-referral",
            },
        )
    )
    plan = next(r for r in applied if r["resourceType"] == "CarePlan")
    # R4 $apply answers with the CarePlan; what it wrote with it is referenced from it
    for part in plan.get("careTeam", []) + plan.get("goal", []):
        if isinstance(part.get("reference"), str):
            applied.append(api.send("GET", f"/fhir/{part['reference']}", "the care plan's parts"))
    report.add(applied)
    report.steps.append(
        f"care plan '{plan.get('title')}': {len(plan.get('goal', []))} goals, "
        f"{len(plan.get('activity', []))} activities (dietitian referral declined)"
    )

    # 5. the social-needs referral: the pantry rejects it, an alternative is proposed
    referral = next(
        (
            t
            for t in api.search(
                "Task",
                "the referral",
                patient=PATIENT,
                code="http://hl7.org/fhir/CodeSystem/task-code|fulfill",
            )
            if t["status"] == "requested" and t.get("owner")
        ),
        None,
    )
    if referral is not None:
        path = f"/care/Task/{referral['id']}/$transition"
        api.send("POST", path, "referral received", json={"status": "received"})
        rejected = api.send(
            "POST",
            path,
            "referral rejected",
            json={"status": "rejected", "reason": "Pantry is outside the patient's area"},
        )
        alternatives = api.search("Task", "the alternative", focus=f"Task/{referral['id']}")
        report.add([rejected, *alternatives])
        if alternatives:
            report.steps.append(
                f"referral '{rejected.get('description')}' rejected -> "
                f"'{alternatives[0].get('code', {}).get('text')}' for the care manager"
            )

    # 6. follow-up calls at the tier's cadence; the first one documented
    calls = _resources(
        api.send(
            "POST",
            "/care/followups",
            "follow-up calls",
            json={"patient": PATIENT, "owner": CM, "tier": elig["tier"], "count": 2},
        )
    )
    report.add(calls)
    if calls:
        documented = _resources(
            api.send(
                "POST",
                f"/care/Task/{calls[0]['id']}/$document-call",
                "the first call",
                json={
                    "summary": "Reviewed glucose log and pantry options; no hypoglycaemia.",
                    "topics": ["glucose", "food access"],
                },
            )
        )
        report.add(documented)
    report.steps.append(f"{len(calls)} follow-up calls scheduled ({elig['tier']} risk)")

    # 7. education delivered
    index = next(
        (i for i, a in enumerate(plan.get("activity", [])) if a.get("id") == "diabetes-education"),
        None,
    )
    if index is not None:
        report.add(
            _resources(
                api.send(
                    "POST",
                    f"/care/CarePlan/{plan['id']}/$education-delivered",
                    "education",
                    json={
                        "activity": index,
                        "title": "NIDDK: Managing Diabetes",
                        "url": "https://www.niddk.nih.gov/health-information/diabetes/overview/"
                        "managing-diabetes",
                    },
                )
            )
        )
        report.steps.append("diabetes education recorded on the plan")

    # 8. a new HbA1c: goal progress follows
    a1c = hba1c("demo-a1c-2", 7.8, at - timedelta(minutes=1))
    report.add([api.send("PUT", "/fhir/Observation/demo-a1c-2", "the new HbA1c", json=a1c)])
    goals = api.search("Goal", "goal progress", patient=PATIENT)
    goal = next(
        (g for g in goals if (g.get("identifier") or [{}])[0].get("value") == "t2dm/hba1c"), None
    )
    if goal is not None:
        status = ((goal.get("achievementStatus") or {}).get("coding") or [{}])[0].get("code")
        report.steps.append(f"HbA1c 9.2% -> 7.8%: goal 'HbA1c below 7%' is {status}")

    worklist = api.send("GET", "/care/worklist", "the worklist", params={"practitioner": CM})
    report.worklist = worklist.get("items", [])
    return report


@contextmanager
def local_client(settings: Any) -> Iterator[httpx.Client]:
    """A fhircare server of its own on the settings' data folder, on a free loopback port
    for the time of the block (the demo then speaks HTTP to it like to any server)."""
    import threading

    import uvicorn

    from fhircare.api.app import create_app

    app = create_app(settings)  # StoreLocked here when `fhircare serve` holds the folder
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, name="fhircare-demo-server", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise DemoError("the local fhircare server did not start")
            thread.join(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(60)
