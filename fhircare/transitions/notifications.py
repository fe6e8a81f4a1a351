"""Da Vinci Unsolicited Notifications (admit, transfer, discharge) through `$process-message`.

A notification is a Bundle of type `message` whose first entry is a MessageHeader with
`eventCoding` from http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event
(notification-admit, notification-transfer, notification-discharge; HL7 v2 event codes
A01/A02/A03 of v2-0003 are accepted too) and `focus` the Encounter, which must be in the
Bundle. The other entries (Patient, Encounter, Conditions, Practitioners...) are stored in one
commit, upserted on their id or identifier, references between entries rewritten to the
stored ids; entries whose content is already stored are not written again. A discharge then
runs discharge processing (through the bus and directly: processing is idempotent).

The answer is a response message (MessageHeader.response.identifier = the request's
MessageHeader id, code `ok`). The same message (Bundle.identifier, else MessageHeader id)
processed again returns the stored response without writing anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fhircare.care.common import fhir_datetime, utcnow
from fhircare.fhir.errors import BadRequest, Unprocessable
from fhircare.fhir.references import iter_references, parse_local
from fhircare.fhir.validation import SUPPORTED, validate_resource
from fhircare.store.base import Store, WriteOp, WriteResult
from fhircare.transitions import discharge

log = logging.getLogger("fhircare.notifications")

Resource = dict[str, Any]
CommitFn = Callable[[list[WriteOp]], list[WriteResult]]

EVENT_SYSTEM = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
V2_EVENT = "http://terminology.hl7.org/CodeSystem/v2-0003"
EVENTS = {
    (EVENT_SYSTEM, "notification-admit"): "admit",
    (EVENT_SYSTEM, "notification-transfer"): "transfer",
    (EVENT_SYSTEM, "notification-discharge"): "discharge",
    (V2_EVENT, "A01"): "admit",
    (V2_EVENT, "A02"): "transfer",
    (V2_EVENT, "A03"): "discharge",
}
MARKER = "message.{}"
OWN_ENDPOINT = "urn:fhircare"


def _message_key(bundle: Resource, header: Resource) -> str:
    ident = bundle.get("identifier") or {}
    if ident.get("value"):
        raw = f"bundle|{ident.get('system', '')}|{ident['value']}"
    else:
        raw = f"header|{header.get('id')}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _check(bundle: Any) -> tuple[Resource, list[Resource], str, Resource]:
    """(header, other entries, event kind, focus Encounter entry) or a 400/422 error."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("$process-message needs a Bundle")
    if bundle.get("type") != "message":
        raise BadRequest(f"Bundle.type must be 'message', not {bundle.get('type')!r}")
    entries = bundle.get("entry") or []
    if not entries or not isinstance(entries[0], dict):
        raise BadRequest("A message Bundle needs a MessageHeader as its first entry")
    header = entries[0].get("resource") or {}
    if header.get("resourceType") != "MessageHeader":
        raise BadRequest(
            "The first entry of a message Bundle must be a MessageHeader",
            expression=["Bundle.entry[0].resource"],
        )
    validate_resource(bundle)
    if not header.get("id"):
        raise Unprocessable(
            "The MessageHeader needs an id (the response refers to it)",
            expression=["Bundle.entry[0].resource.id"],
        )
    coding = header.get("eventCoding") or {}
    kind = EVENTS.get((coding.get("system"), coding.get("code")))
    if kind is None:
        raise Unprocessable(
            f"Unsupported message event {coding.get('system')}|{coding.get('code')} "
            "(expected a Da Vinci notification-admit/-transfer/-discharge event)",
            expression=["Bundle.entry[0].resource.eventCoding"],
            code="not-supported",
        )
    others = [e for e in entries[1:] if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    focus_refs = [f.get("reference") for f in header.get("focus") or [] if f.get("reference")]
    if not focus_refs:
        raise Unprocessable(
            "The MessageHeader has no focus (the Encounter)",
            expression=["Bundle.entry[0].resource.focus"],
        )
    for ref in focus_refs:
        entry = _find_entry(others, ref)
        if entry is not None and entry["resource"].get("resourceType") == "Encounter":
            return header, others, kind, entry
    raise Unprocessable(
        f"The MessageHeader focus {', '.join(focus_refs)} is not an Encounter in the Bundle",
        expression=["Bundle.entry[0].resource.focus"],
    )


def _find_entry(entries: list[Resource], ref: str) -> Resource | None:
    for e in entries:
        r = e["resource"]
        full = e.get("fullUrl") or ""
        if ref == full:
            return e
        if r.get("id") and (
            ref == f"{r['resourceType']}/{r['id']}"
            or ref.endswith(f"/{r['resourceType']}/{r['id']}")
        ):
            return e
    return None


def _identifier_params(resource: Resource) -> list[tuple[str, str]]:
    for ident in resource.get("identifier") or []:
        if ident.get("system") and ident.get("value"):
            return [("identifier", f"{ident['system']}|{ident['value']}")]
    return []


def _target_id(store: Store, resource: Resource) -> tuple[str, bool]:
    """(id to store under, resource already stored with it?)."""
    rtype = resource["resourceType"]
    if resource.get("id") and store.current_version(rtype, resource["id"]) is not None:
        return resource["id"], True
    params = _identifier_params(resource)
    if params:
        found = store.search(rtype, params)
        if len(found) == 1:
            return found[0]["id"], True
    if resource.get("id"):
        return resource["id"], False
    return str(uuid.uuid4()), False


def _plan_writes(store: Store, entries: list[Resource]) -> tuple[list[WriteOp], list[str], str]:
    """Upserts of the supported entries (unchanged ones skipped), ignored types, and the
    stored reference of each entry by fullUrl / local reference."""
    mapping: dict[str, str] = {}
    planned: list[tuple[Resource, str, bool]] = []
    ignored: list[str] = []
    for e in entries:
        r = json.loads(json.dumps(e["resource"]))
        rtype = r.get("resourceType")
        if rtype not in SUPPORTED:
            ignored.append(str(rtype))
            continue
        rid, known = _target_id(store, r)
        new_ref = f"{rtype}/{rid}"
        if e.get("fullUrl"):
            mapping[e["fullUrl"]] = new_ref
        if r.get("id"):
            mapping[f"{rtype}/{r['id']}"] = new_ref
        r["id"] = rid
        planned.append((r, rid, known))

    def rewrite(ref: str) -> str | None:
        if ref in mapping:
            return mapping[ref]
        local = parse_local(ref)
        return mapping.get(f"{local[0]}/{local[1]}") if local else None

    ops: list[WriteOp] = []
    for r, rid, known in planned:
        for _, ref in iter_references(r):
            new = rewrite(ref["reference"])
            if new:
                ref["reference"] = new
        r.pop("meta", None)
        if known and store.exists(r["resourceType"], rid):
            current = store.read(r["resourceType"], rid)
            current.pop("meta", None)
            if current == r:
                continue
        ops.append(WriteOp("update", r["resourceType"], id=rid, resource=r, origin="local"))
    return ops, ignored, mapping


def _response(
    header: Resource, request_bundle: Resource, key: str, now: datetime, notes: list[str]
) -> Resource:
    src_endpoint = (header.get("source") or {}).get("endpoint")
    own = next(
        (d.get("endpoint") for d in header.get("destination") or [] if d.get("endpoint")),
        OWN_ENDPOINT,
    )
    reply: Resource = {
        "resourceType": "MessageHeader",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{OWN_ENDPOINT}/message/{key}/header")),
        "eventCoding": header["eventCoding"],
        "source": {"name": "fhircare", "endpoint": own},
        "response": {"identifier": header["id"], "code": "ok"},
    }
    if src_endpoint:
        reply["destination"] = [{"endpoint": src_endpoint}]
    outcome: Resource = {
        "resourceType": "OperationOutcome",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{OWN_ENDPOINT}/message/{key}/outcome")),
        "issue": [
            {"severity": "information", "code": "informational", "diagnostics": n} for n in notes
        ],
    }
    reply["response"]["details"] = {"reference": f"urn:uuid:{outcome['id']}"}
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{OWN_ENDPOINT}/message/{key}")),
        "type": "message",
        "timestamp": fhir_datetime(now),
        "entry": [
            {"fullUrl": f"urn:uuid:{reply['id']}", "resource": reply},
            {"fullUrl": f"urn:uuid:{outcome['id']}", "resource": outcome},
        ],
    }


def process_message(
    store: Store,
    bundle: Any,
    *,
    commit_fn: CommitFn | None = None,
    care_manager: str | None = None,
    now: datetime | None = None,
) -> Resource:
    """Process a Da Vinci notification message; returns the response message Bundle.

    `commit_fn` commits the entries (e.g. `ResourceService.commit_prepared`, which also
    publishes them on the bus); default `store.commit`. Raises BadRequest (400) for a Bundle
    that is not a message with a MessageHeader first, Unprocessable (422) for an invalid one.
    """
    header, entries, kind, focus = _check(bundle)
    key = _message_key(bundle, header)
    seen = store.get_meta(MARKER.format(key))
    if isinstance(seen, dict) and seen.get("resourceType") == "Bundle":
        return seen
    at = utcnow(now)
    ops, ignored, mapping = _plan_writes(store, entries)
    results = (commit_fn or store.commit)(ops) if ops else []
    notes = [f"{kind} notification: {len(results)} resource(s) stored"]
    if ignored:
        notes.append(f"not stored (unsupported types): {', '.join(sorted(set(ignored)))}")
    enc_ref = mapping.get(focus.get("fullUrl") or "") or mapping.get(
        f"Encounter/{focus['resource'].get('id')}"
    )
    if kind == "discharge" and enc_ref:
        encounter = store.read("Encounter", enc_ref.split("/", 1)[1])
        if discharge.is_discharge(encounter):
            written = discharge.process_discharge(
                store, encounter, care_manager=care_manager, now=at
            )
            outcome = discharge.outcome_text(store, encounter["id"])
            notes.append(f"{enc_ref}: {outcome} ({len(written)} resource(s) written now)")
        else:
            notes.append(f"{enc_ref} is not a finished inpatient/emergency/observation stay")
    elif enc_ref:  # an admit or transfer: a stay moved back from finished undoes its discharge
        encounter = store.read("Encounter", enc_ref.split("/", 1)[1])
        discharge.undo_discharge(store, encounter, care_manager=care_manager, now=at)
        if store.get_meta(discharge.DISCHARGE_MARKER.format(encounter["id"])) is not None:
            notes.append(f"{enc_ref}: {discharge.outcome_text(store, encounter['id'])}")
    response = _response(header, bundle, key, at, notes)
    store.set_meta(MARKER.format(key), response)
    return response
