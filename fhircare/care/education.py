"""Patient education as care-plan activities, and recording that it was given.

Choice: education is a CarePlan.activity `detail` (kind CommunicationRequest, code SNOMED CT
409073007 Education) whose `description` names the material (title and URL, from the
ActivityDefinition's relatedArtifact). No separate request resource is created: a plan
activity is what the care manager works through. Delivery is recorded by
`record_education_delivered`: the activity becomes `completed` and its outcomeReference
points to a Communication (the material as an attachment payload), in one commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhircare.care.common import (
    Resource,
    commit,
    create_op,
    fhir_datetime,
    new_id,
    update_op,
    utcnow,
    with_profile,
)
from fhircare.fhir.errors import Unprocessable
from fhircare.store.base import Store


def material_of(ad: Resource) -> dict[str, str] | None:
    """The first documentation relatedArtifact of an ActivityDefinition as {title, url}."""
    for art in ad.get("relatedArtifact") or []:
        if art.get("type") in ("documentation", "derived-from") and (
            art.get("url") or art.get("display")
        ):
            return {"title": art.get("display") or art["url"], "url": art.get("url", "")}
    return None


def education_detail(ad: Resource) -> Resource:
    """The CarePlan.activity.detail for an education ActivityDefinition."""
    material = material_of(ad)
    text = ad.get("title") or ad["id"]
    if material:
        text += f". Material: {material['title']}" + (
            f" <{material['url']}>" if material["url"] else ""
        )
    detail: Resource = {
        "kind": "CommunicationRequest",
        "instantiatesCanonical": [ad["url"]],
        "status": "not-started",
        "description": text,
    }
    if ad.get("code"):
        detail["code"] = ad["code"]
    return detail


def record_education_delivered(
    store: Store,
    careplan_id: str,
    activity_index: int,
    *,
    material: dict[str, str] | str,
    now: datetime | None = None,
    performer: str | None = None,
    if_match: str | None = None,
) -> list[Resource]:
    """Mark a plan's education activity completed and write the Communication (one commit).

    `material` is {"title", "url"} or a title. Returns [CarePlan, Communication].
    Raises Unprocessable when the index is out of range, the activity is not an education
    detail, or it is cancelled/completed already.
    """
    at = utcnow(now)
    plan = store.read("CarePlan", careplan_id)
    acts = plan.get("activity") or []
    path = f"CarePlan.activity[{activity_index}]"
    if not 0 <= activity_index < len(acts):
        raise Unprocessable(
            f"CarePlan/{careplan_id} has no activity {activity_index}", expression=[path]
        )
    act = acts[activity_index]
    detail = act.get("detail")
    if not detail or detail.get("kind") != "CommunicationRequest":
        raise Unprocessable(f"{path} is not an education activity", expression=[f"{path}.detail"])
    if detail.get("status") in ("completed", "cancelled", "entered-in-error"):
        raise Unprocessable(
            f"{path} is {detail['status']}: education cannot be recorded",
            expression=[f"{path}.detail.status"],
            code="business-rule",
        )
    mat: dict[str, Any] = {"title": material} if isinstance(material, str) else dict(material)
    if not mat.get("title"):
        raise Unprocessable("The material needs a title", expression=["material.title"])
    sender = performer or (plan.get("author") or {}).get("reference")
    attachment: Resource = {"title": mat["title"]}
    if mat.get("url"):
        attachment["url"] = mat["url"]
    comm: Resource = {
        "resourceType": "Communication",
        "id": new_id(),
        "basedOn": [{"reference": f"CarePlan/{careplan_id}"}],
        "status": "completed",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "409073007",
                        "display": "Education",
                    }
                ]
            }
        ],
        "subject": plan["subject"],
        "about": [{"reference": f"CarePlan/{careplan_id}"}],
        "sent": fhir_datetime(at),
        "recipient": [plan["subject"]],
        "payload": [
            {"contentAttachment": attachment},
            {"contentString": detail.get("description", mat["title"])},
        ],
    }
    if sender:
        comm["sender"] = {"reference": sender}
    with_profile(comm, "fhircare-communication")
    detail["status"] = "completed"
    act["outcomeReference"] = [
        *(act.get("outcomeReference") or []),
        {"reference": f"Communication/{comm['id']}"},
    ]
    version = plan["meta"]["versionId"]
    if if_match is not None and if_match != version:
        from fhircare.fhir.errors import PreconditionFailed

        raise PreconditionFailed(f"If-Match {if_match} does not match version {version}")
    plan["meta"] = {"profile": plan["meta"].get("profile", [])}
    return commit(store, [update_op(plan, if_match=version), create_op(comm)])
