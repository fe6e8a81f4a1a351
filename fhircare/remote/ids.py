"""Ids a HAPI server accepts under any of its client id strategies.

HAPI's default (`client_id_strategy: ALPHANUMERIC`, the official image's) refuses to create a
resource under an id made only of digits (HAPI-0960): such ids belong to its own sequential
server ids. Every id fhircare chooses has letters or dashes (`store.base.new_id`, UUIDs,
`fhircare-meta-...`).
An id a client chooses is refused up front when the local store syncs with HAPI, with an
OperationOutcome that says why: accepting it locally would only move the failure to a later
`sync push`, and renaming it on the way to HAPI would break every reference to it, in other
systems too. Existing resources keep their ids (a numeric id HAPI assigned and fhircare
pulled is an update, which HAPI accepts).
"""

from __future__ import annotations

from typing import Any

from fhircare.fhir.errors import Unprocessable
from fhircare.fhir.validation import SUPPORTED_TYPES
from fhircare.services.bus import MessageBus
from fhircare.store.base import Store


def hapi_accepts_new_id(resource_id: str) -> bool:
    """True for an id HAPI lets a client create under any client id strategy."""
    return not resource_id.isdigit()


def refuse_numeric_new_ids(store: Store, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
    """Bus check: a new resource under an id of digits only is refused (422)."""
    rid = new.get("id")
    if old is not None or not isinstance(rid, str) or hapi_accepts_new_id(rid):
        return
    rtype = new.get("resourceType", "")
    if store.current_version(rtype, rid) is not None:
        return  # it exists (deleted): not a new id
    raise Unprocessable(
        f"{rtype}/{rid}: an id made only of digits cannot be synced to HAPI FHIR, whose "
        "default client id strategy (ALPHANUMERIC) refuses it (HAPI-0960); use an id with "
        "at least one letter, or create the resource with POST and let the server choose",
        expression=[f"{rtype}.id"],
        code="business-rule",
    )


def register(bus: MessageBus) -> None:
    """Refuse new numeric client ids for every resource type (when syncing with HAPI)."""
    for resource_type in SUPPORTED_TYPES:
        bus.check(resource_type, refuse_numeric_new_ids)
