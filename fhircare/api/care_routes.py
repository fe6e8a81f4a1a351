"""Care-manager endpoints under /care: worklist, eligibility, Task transitions, follow-up
calls, education and plan revisions. Bodies are small JSON objects (documented in OpenAPI);
answers are FHIR resources or JSON summaries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fhircare.api.access import Access, get_access
from fhircare.api.http import ERROR_RESPONSES, RESOURCE_SCHEMA, FhirJSONResponse
from fhircare.care import education, eligibility, followup, revisions, tasks, worklist
from fhircare.fhir.errors import BadRequest
from fhircare.fhir.validation import check_id
from fhircare.services.resources import parse_etag

CARE_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {
        "description": "Created: a Bundle of what was written",
        "content": {"application/fhir+json": {"schema": RESOURCE_SCHEMA}},
    },
}
router = APIRouter(
    prefix="/care",
    tags=["Care management"],
    default_response_class=FhirJSONResponse,
    responses={**ERROR_RESPONSES, **CARE_RESPONSES},
)


def _publish(access: Access, written: list[dict[str, Any]]) -> None:
    access.svc.publish(written)


def _collection(written: list[dict[str, Any]]) -> dict[str, Any]:
    """A collection Bundle of what an endpoint wrote."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in written],
    }


def _patient_ref(value: str) -> str:
    ref = value if value.startswith("Patient/") else f"Patient/{value}"
    check_id(ref.split("/", 1)[1])
    return ref


@router.get(
    "/worklist",
    summary="A care manager's open Tasks, most pressing first",
    response_class=JSONResponse,
)
def get_worklist(
    request: Request,
    practitioner: str = Query(..., min_length=1, max_length=200),
    access: Access = Depends(get_access),
) -> FhirJSONResponse:
    access.require_system("The worklist")
    ref = practitioner if "/" in practitioner else f"Practitioner/{practitioner}"
    check_id(ref.split("/", 1)[1])
    items = worklist.worklist(access.store, ref)
    return FhirJSONResponse(
        {"practitioner": ref, "count": len(items), "items": [i.as_dict() for i in items]},
        media_type="application/json",
    )


@router.get(
    "/eligibility",
    summary="Chronic care management eligibility and risk flag",
    response_class=JSONResponse,
)
def get_eligibility(
    request: Request,
    patient: str = Query(..., min_length=1, max_length=200),
    access: Access = Depends(get_access),
) -> FhirJSONResponse:
    ref = _patient_ref(patient)
    store = access.store
    store.read("Patient", ref.split("/", 1)[1])
    result = eligibility.assess_eligibility(store, ref)
    return FhirJSONResponse(
        {
            "patient": ref,
            "ccmEligible": result.ccm_eligible,
            "highRisk": result.high_risk,
            "tier": result.tier,
            "chronicConditions": result.chronic_conditions,
            "behavioural": result.behavioural,
            "reasons": result.reasons,
        },
        media_type="application/json",
    )


class TransitionBody(BaseModel):
    status: str = Field(..., min_length=1, max_length=40)
    reason: str | None = Field(None, max_length=2000)


@router.post("/Task/{task_id}/$transition", summary="Move a Task through its state machine")
def transition(
    task_id: str, body: TransitionBody, request: Request, access: Access = Depends(get_access)
) -> FhirJSONResponse:
    check_id(task_id)
    store = access.store
    access.require("Task", "update", store.read("Task", task_id))
    task = tasks.transition(
        store,
        task_id,
        body.status,
        reason=body.reason,
        if_match=parse_etag(request.headers.get("if-match")),
    )
    _publish(access, [task])
    return FhirJSONResponse(task, headers={"ETag": f'W/"{task["meta"]["versionId"]}"'})


class CallBody(BaseModel):
    summary: str = Field(..., min_length=1, max_length=10000)
    topics: list[str] = Field(default_factory=list, max_length=50)


@router.post("/Task/{task_id}/$document-call", summary="Document a follow-up call")
def document_call(
    task_id: str, body: CallBody, request: Request, access: Access = Depends(get_access)
) -> FhirJSONResponse:
    check_id(task_id)
    store = access.store
    access.require("Task", "update", store.read("Task", task_id))
    written = followup.document_call(store, task_id, summary=body.summary, topics=body.topics)
    _publish(access, written)
    return FhirJSONResponse(_collection(written))


class FollowupBody(BaseModel):
    patient: str = Field(..., min_length=1, max_length=200)
    owner: str = Field(..., min_length=1, max_length=200)
    tier: str | None = Field(None, description="high, moderate or low; default from eligibility")
    count: int | None = Field(None, ge=1, le=52)


@router.post("/followups", summary="Schedule follow-up calls by risk tier")
def schedule(
    body: FollowupBody, request: Request, access: Access = Depends(get_access)
) -> FhirJSONResponse:
    store = access.store
    ref = _patient_ref(body.patient)
    store.read("Patient", ref.split("/", 1)[1])
    tier = body.tier or eligibility.assess_eligibility(store, ref).tier
    written = followup.schedule_followups(
        store, ref, tier, start=datetime.now(UTC), count=body.count, owner=body.owner
    )
    _publish(access, written)
    return FhirJSONResponse(
        _collection(written),
        status_code=201,
    )


class EducationBody(BaseModel):
    activity: int = Field(..., ge=0, le=500)
    title: str = Field(..., min_length=1, max_length=500)
    url: str | None = Field(None, max_length=2000)


@router.post("/CarePlan/{careplan_id}/$education-delivered", summary="Record education given")
def education_delivered(
    careplan_id: str, body: EducationBody, request: Request, access: Access = Depends(get_access)
) -> FhirJSONResponse:
    check_id(careplan_id)
    store = access.store
    access.require("CarePlan", "update", store.read("CarePlan", careplan_id))
    material: dict[str, str] | str = {
        "title": body.title,
        **({"url": body.url} if body.url else {}),
    }
    written = education.record_education_delivered(
        store,
        careplan_id,
        body.activity,
        material=material,
        if_match=parse_etag(request.headers.get("if-match")),
    )
    _publish(access, written)
    return FhirJSONResponse(_collection(written))


class ReviseBody(BaseModel):
    author: str = Field(..., min_length=1, max_length=200)
    changes: dict[str, Any]
    reason: str | None = Field(None, max_length=2000)


@router.post("/CarePlan/{careplan_id}/$revise", summary="Revise a plan with Provenance")
def revise(
    careplan_id: str, body: ReviseBody, request: Request, access: Access = Depends(get_access)
) -> FhirJSONResponse:
    check_id(careplan_id)
    store = access.store
    access.require("CarePlan", "update", store.read("CarePlan", careplan_id))
    if_match = parse_etag(request.headers.get("if-match"))
    if if_match is None:
        raise BadRequest(
            "Revising a plan needs If-Match with the version you read", status=428, code="conflict"
        )
    written = revisions.revise_careplan(
        store, careplan_id, body.changes, author=body.author, if_match=if_match, reason=body.reason
    )
    _publish(access, written)
    return FhirJSONResponse(_collection(written))
