"""Revising a CarePlan: the new version plus a Provenance saying who changed it, in one commit.

The Provenance targets the versioned reference of the new version (CarePlan/x/_history/n),
names the previous version as a `revision` entity, the author as agent (type `author`) and
the activity UPDATE (v3-DataOperation).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhircare.care.common import (
    Resource,
    coding,
    commit,
    create_op,
    fhir_datetime,
    new_id,
    read_ref,
    update_op,
    utcnow,
    with_profile,
)
from fhircare.fhir.errors import PreconditionFailed, Unprocessable
from fhircare.fhir.validation import validate_resource
from fhircare.store.base import Store, WriteOp

REVISABLE = frozenset(
    {
        "status",
        "title",
        "description",
        "period",
        "category",
        "careTeam",
        "addresses",
        "supportingInfo",
        "goal",
        "activity",
        "note",
        "contributor",
        "author",
    }
)
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def revise_careplan(
    store: Store,
    careplan_id: str,
    changes: dict[str, Any],
    *,
    author: str,
    if_match: str | None,
    now: datetime | None = None,
    reason: str | None = None,
) -> list[Resource]:
    """Apply `changes` (top-level CarePlan elements; None removes one) as a new version.

    Returns [CarePlan, Provenance]. Raises Unprocessable for an element that may not be
    revised or an invalid result, PreconditionFailed when `if_match` is not the current
    version (a lost-update guard: pass the version the user edited).
    """
    ops = revision_ops(
        store, careplan_id, changes, author=author, if_match=if_match, now=now, reason=reason
    )
    return commit(store, ops)


def revision_ops(
    store: Store,
    careplan_id: str,
    changes: dict[str, Any],
    *,
    author: str,
    if_match: str | None,
    now: datetime | None = None,
    reason: str | None = None,
) -> list[WriteOp]:
    """The writes of `revise_careplan` (CarePlan update guarded by its current version, then
    the Provenance), not committed, so a caller can commit them with other writes."""
    at = utcnow(now)
    plan = store.read("CarePlan", careplan_id)
    current = plan["meta"]["versionId"]
    if if_match is not None and if_match != current:
        raise PreconditionFailed(
            f"If-Match version {if_match} does not match the current version {current} "
            f"of CarePlan/{careplan_id}"
        )
    if not changes:
        raise Unprocessable("No changes given", expression=["CarePlan"])
    for key in changes:
        if key not in REVISABLE:
            raise Unprocessable(
                f"CarePlan.{key} cannot be revised (revisable: {', '.join(sorted(REVISABLE))})",
                expression=[f"CarePlan.{key}"],
            )
    read_ref(store, author)
    new = {k: v for k, v in plan.items() if k != "meta"}
    new["meta"] = {"profile": plan["meta"].get("profile") or []}
    for key, value in changes.items():
        if value is None:
            new.pop(key, None)
        else:
            new[key] = value
    if not new["meta"]["profile"]:
        with_profile(new, "fhircare-careplan")
    validate_resource(new, "CarePlan")
    new_version = str(int(current) + 1)
    provenance: Resource = {
        "resourceType": "Provenance",
        "id": new_id(),
        "target": [{"reference": f"CarePlan/{careplan_id}/_history/{new_version}"}],
        "recorded": fhir_datetime(at),
        "activity": {"coding": [coding(DATA_OPERATION, "UPDATE", "revise")]},
        "agent": [
            {
                "type": {"coding": [coding(PARTICIPANT_TYPE, "author", "Author")]},
                "who": {"reference": author},
            }
        ],
        "entity": [
            {
                "role": "revision",
                "what": {"reference": f"CarePlan/{careplan_id}/_history/{current}"},
            }
        ],
    }
    if reason:
        provenance["reason"] = [{"text": reason}]
    with_profile(provenance, "fhircare-provenance")
    return [update_op(new, if_match=current), create_op(provenance)]
