"""A care manager's decision on a medication-reconciliation issue (a DetectedIssue).

Three decisions, each one commit:

- `accept`: the discharge therapy is appropriate as reconciled (the flagged change was
  intended). The DetectedIssue gets a mitigation coded v3 ActCode `1` "Therapy Appropriate";
  its open review Tasks are completed.
- `override` (a reason is required): the flag does not apply, for the reason given. The
  mitigation carries the reason as text and, when one is chosen, its ActCode
  (`OVERRIDE_REASONS`, the "therapy appropriate" family of ActDetectedIssueManagementCode);
  the review Tasks are completed.
- `call-prescriber`: the issue needs the prescriber. A Task "call the prescriber" (care-task
  `prescriber-contact`) is opened for the reviewer, part of the review Task; the
  DetectedIssue gets no mitigation until the call settles it.

Every decision also writes a Provenance naming the reviewer, the version of the issue that
was reviewed and the reason. A decision on a version the reviewer did not see (`if_match`)
is refused (412), and an issue already decided is not decided again (409).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fhircare.care.common import (
    CARE_TASK,
    Resource,
    coding,
    commit,
    create_op,
    fhir_datetime,
    has_code,
    new_id,
    read_ref,
    update_op,
    utcnow,
    with_profile,
)
from fhircare.care.tasks import OPEN, apply_status
from fhircare.fhir.errors import Conflict, NotFound, PreconditionFailed, Unprocessable
from fhircare.store.base import Store, WriteOp

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DECISIONS = ("accept", "override", "call-prescriber")
ACCEPT_CODE = ("1", "Therapy Appropriate")
# ActDetectedIssueManagementCode: reasons a reviewer may give for overriding a flag
OVERRIDE_REASONS: dict[str, str] = {
    "2": "Assessed Patient",
    "3": "Patient Explanation",
    "4": "Consulted Other Source",
    "7": "Interacting Therapy No Longer Active/Planned",
    "22": "appropriate indication or diagnosis",
    "23": "prior therapy documented",
}
PRESCRIBER_CONTACT = "prescriber-contact"
REVIEWER_TYPES = ("Practitioner", "PractitionerRole")


def review_issue(
    store: Store,
    issue_id: str,
    decision: str,
    *,
    reviewer: str,
    reason: str | None = None,
    reason_code: str | None = None,
    if_match: str | None = None,
    now: datetime | None = None,
) -> list[Resource]:
    """Record `decision` on DetectedIssue/`issue_id` by `reviewer` (one commit).

    Returns what was written: the DetectedIssue (accept, override), the Tasks completed or
    opened, and the Provenance. Raises Unprocessable (unknown decision, override without a
    reason, unknown reason code, reviewer not a Practitioner), PreconditionFailed (stale
    `if_match`), Conflict (already decided).
    """
    return commit(
        store,
        review_ops(
            store,
            issue_id,
            decision,
            reviewer=reviewer,
            reason=reason,
            reason_code=reason_code,
            if_match=if_match,
            now=now,
        ),
    )


def review_ops(
    store: Store,
    issue_id: str,
    decision: str,
    *,
    reviewer: str,
    reason: str | None = None,
    reason_code: str | None = None,
    if_match: str | None = None,
    now: datetime | None = None,
) -> list[WriteOp]:
    """The writes of `review_issue`, not committed."""
    at = utcnow(now)
    if decision not in DECISIONS:
        raise Unprocessable(
            f"Unknown decision '{decision}' (one of: {', '.join(DECISIONS)})",
            expression=["decision"],
            code="code-invalid",
        )
    reason = (reason or "").strip() or None
    if decision == "override" and reason is None:
        raise Unprocessable("Overriding an issue needs a reason", expression=["reason"])
    if reason_code is not None and (decision != "override" or reason_code not in OVERRIDE_REASONS):
        raise Unprocessable(
            f"reasonCode '{reason_code}' is not an override reason "
            f"(ActCode {', '.join(OVERRIDE_REASONS)}; only with decision override)",
            expression=["reasonCode"],
            code="code-invalid",
        )
    if reviewer.split("/")[0] not in REVIEWER_TYPES or reviewer.count("/") != 1:
        raise Unprocessable(
            f"The reviewer must be a Practitioner or PractitionerRole, not {reviewer[:60]!r}",
            expression=["reviewer"],
        )
    try:
        read_ref(store, reviewer)
    except NotFound:
        raise Unprocessable(
            f"The reviewer {reviewer} is not known", expression=["reviewer"]
        ) from None
    issue = store.read("DetectedIssue", issue_id)
    current = issue["meta"]["versionId"]
    if if_match is not None and if_match != current:
        raise PreconditionFailed(
            f"DetectedIssue/{issue_id} changed since you read it (version {if_match}, now "
            f"{current}): reload it and decide again"
        )
    if issue.get("mitigation"):
        raise Conflict(
            f"DetectedIssue/{issue_id} was already decided: "
            + "; ".join(_mitigation_text(m) for m in issue["mitigation"]),
            expression=["DetectedIssue.mitigation"],
        )
    stamp = fhir_datetime(at)
    reviews = [
        t
        for t in store.search("Task", [("focus", f"DetectedIssue/{issue_id}")])
        if t.get("status") in OPEN and not has_code(t.get("code"), CARE_TASK, PRESCRIBER_CONTACT)
    ]
    if decision == "call-prescriber":
        return _call_prescriber_ops(store, issue, reviews, reviewer, reason, at)

    if decision == "accept":
        action = {
            "coding": [coding(ACT_CODE, *ACCEPT_CODE)],
            "text": "Accepted at discharge review: therapy appropriate"
            + (f" ({reason})" if reason else ""),
        }
    else:
        action = {"text": f"Overridden at discharge review: {reason}"}
        if reason_code is not None:
            action["coding"] = [coding(ACT_CODE, reason_code, OVERRIDE_REASONS[reason_code])]
    updated = {k: v for k, v in issue.items() if k != "meta"}
    kept_meta = {k: v for k, v in issue["meta"].items() if k not in ("versionId", "lastUpdated")}
    if kept_meta:
        updated["meta"] = kept_meta
    updated["mitigation"] = [{"action": action, "date": stamp, "author": {"reference": reviewer}}]
    ops = [update_op(updated, if_match=current)]
    targets = [f"DetectedIssue/{issue_id}/_history/{int(current) + 1}"]
    for task in reviews:
        done = apply_status(
            task,
            "completed",
            reason=action["text"],
            output=[
                {
                    "type": {"text": "Review decision"},
                    "valueReference": {"reference": f"DetectedIssue/{issue_id}"},
                }
            ],
            now=at,
        )
        ops.append(update_op(done, if_match=task["meta"]["versionId"]))
        targets.append(f"Task/{task['id']}/_history/{int(task['meta']['versionId']) + 1}")
    ops.append(create_op(_provenance(targets, issue_id, current, reviewer, "UPDATE", action, at)))
    return ops


def _call_prescriber_ops(
    store: Store,
    issue: Resource,
    reviews: list[Resource],
    reviewer: str,
    reason: str | None,
    at: datetime,
) -> list[WriteOp]:
    issue_ref = f"DetectedIssue/{issue['id']}"
    open_calls = [
        t
        for t in store.search(
            "Task", [("focus", issue_ref), ("code", f"{CARE_TASK}|{PRESCRIBER_CONTACT}")]
        )
        if t.get("status") in OPEN
    ]
    if open_calls:
        raise Conflict(
            f"{issue_ref} already has an open prescriber call (Task/{open_calls[0]['id']})",
            expression=["Task"],
        )
    detail = issue.get("detail") or (issue.get("code") or {}).get("text") or "medication issue"
    task_id = new_id()
    task: Resource = {
        "resourceType": "Task",
        "id": task_id,
        "status": "requested",
        "intent": "order",
        "priority": "urgent" if issue.get("severity") == "high" else "routine",
        "code": {
            "coding": [coding(CARE_TASK, PRESCRIBER_CONTACT, "Contact the prescriber")],
            "text": "Call the prescriber",
        },
        "description": f"Call the prescriber about: {detail}"[:1000],
        "focus": {"reference": issue_ref},
        "authoredOn": fhir_datetime(at),
        "lastModified": fhir_datetime(at),
        "requester": {"reference": reviewer},
        "owner": {"reference": reviewer},
        "restriction": {"period": {"end": fhir_datetime(at + timedelta(days=1))}},
    }
    patient = (issue.get("patient") or {}).get("reference")
    if patient:
        task["for"] = {"reference": patient}
    if reviews:
        task["partOf"] = [{"reference": f"Task/{reviews[0]['id']}"}]
        if reviews[0].get("encounter"):
            task["encounter"] = reviews[0]["encounter"]
    if reason:
        task["note"] = [{"text": reason, "time": fhir_datetime(at)}]
    with_profile(task, "fhircare-task")
    action = {"text": "Prescriber to be called" + (f": {reason}" if reason else "")}
    provenance = _provenance(
        [f"Task/{task_id}/_history/1"], issue["id"], issue["meta"]["versionId"], reviewer,
        "CREATE", action, at,
    )
    return [create_op(task), create_op(provenance)]


def _provenance(
    targets: list[str],
    issue_id: str,
    reviewed_version: str,
    reviewer: str,
    operation: str,
    action: Resource,
    at: datetime,
) -> Resource:
    provenance: Resource = {
        "resourceType": "Provenance",
        "id": new_id(),
        "target": [{"reference": t} for t in targets],
        "recorded": fhir_datetime(at),
        "activity": {"coding": [coding(DATA_OPERATION, operation, operation.lower())]},
        "reason": [{"text": action["text"]}],
        "agent": [
            {
                "type": {"coding": [coding(PARTICIPANT_TYPE, "verifier", "Verifier")]},
                "who": {"reference": reviewer},
            }
        ],
        "entity": [
            {
                "role": "source",
                "what": {"reference": f"DetectedIssue/{issue_id}/_history/{reviewed_version}"},
            }
        ],
    }
    return with_profile(provenance, "fhircare-provenance")


def _mitigation_text(mitigation: Resource) -> str:
    action = mitigation.get("action") or {}
    codings = action.get("coding") or [{}]
    return str(action.get("text") or codings[0].get("display") or "mitigated")
