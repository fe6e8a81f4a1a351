"""DetectedIssue/{id}/$review: a care manager's decision on a reconciliation issue.

Parameters (query string or a Parameters body): `decision` (accept, override,
call-prescriber), `reviewer` (Practitioner/x; a reference or a string), `reason` (text; needed
to override), `reasonCode` (an ActCode override reason). `If-Match: W/"n"` names the version
of the issue the reviewer saw (412 when it moved on). Answers a collection Bundle of what
was written (see `fhircare.care.issue_review`).
"""

from __future__ import annotations

from typing import Any

from fhircare.api.care_operations import publish, written_bundle
from fhircare.api.operations import OpCall, Operation, OperationRegistry
from fhircare.care import issue_review
from fhircare.fhir.errors import BadRequest
from fhircare.fhir.validation import check_id
from fhircare.services.resources import parse_etag


def _text(call: OpCall, name: str) -> str | None:
    value = call.param(name)
    if isinstance(value, dict):
        value = value.get("reference")
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"$review {name} must be a string", expression=[name])
    return value


def review(call: OpCall) -> dict[str, Any]:
    """Record an accept, override or call-the-prescriber decision on the issue."""
    store = call.store
    check_id(call.id or "")
    store.read("DetectedIssue", call.id)
    decision = _text(call, "decision")
    reviewer = _text(call, "reviewer")
    if not decision or not reviewer:
        raise BadRequest("$review needs decision and reviewer", expression=["decision"])
    written = issue_review.review_issue(
        store,
        call.id,
        decision,
        reviewer=reviewer,
        reason=_text(call, "reason"),
        reason_code=_text(call, "reasonCode"),
        if_match=parse_etag(call.headers.get("if-match")),
    )
    publish(call, written)
    return written_bundle(call, written)


def register(ops: OperationRegistry) -> None:
    ops.add(
        Operation(
            "review",
            review,
            "instance",
            ("DetectedIssue",),
            description="Accept, override (with a reason) or refer a reconciliation issue "
            "to the prescriber",
        )
    )
