"""Event intake: HL7 v2 ADT messages and resources pushed by a FHIR server's Subscription.

Each ADT message becomes one FHIR transaction (Patient, Encounter, Conditions upserted on
their identifiers: all or nothing); the bus then runs discharge processing for a finished
inpatient Encounter. The ACK is sent only after everything is stored. A message re-sent
with the same control id is answered with the same ACK and writes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from fhircare.fhir.errors import FhirError
from fhircare.observability.events import hl7_message
from fhircare.services.bundles import BundleProcessor
from fhircare.services.resources import ResourceService
from fhircare.store.base import WriteOp
from fhircare.transitions import discharge
from fhircare.transitions.hl7v2 import AdtMessage, adt_to_transaction, match_query, parse_adt
from fhircare.transitions.hl7v2_ack import ack_for_error, build_ack, encode_ack
from fhircare.transitions.hl7v2_er7 import Hl7Error
from fhircare.transitions.hl7v2_merge import merge_stored

log = logging.getLogger("fhircare.intake")


class Hl7Intake:
    def __init__(self, bundles: BundleProcessor, *, default_tz: str = "UTC") -> None:
        self.bundles = bundles
        self.store = bundles.svc.store
        self.default_tz = default_tz

    def scoped(self, bundles: BundleProcessor) -> Hl7Intake:
        """The same intake writing through a caller's (gated) Bundle processor."""
        return Hl7Intake(bundles, default_tz=self.default_tz)

    def handle(self, raw: bytes, transport: str = "http") -> bytes:
        """Process one ER7 message; returns the encoded ACK (AA, AE or AR). One log line
        and one metric per message: transport, message type, control id, ACK code."""
        ack, message_type, control_id = self._answer(raw)
        hl7_message(transport, message_type, control_id, ack_code(ack))
        return ack

    def _answer(self, raw: bytes) -> tuple[bytes, str, str]:
        try:
            adt = parse_adt(raw, default_tz=self.default_tz)
        except Hl7Error as exc:
            return encode_ack(ack_for_error(raw, exc), raw), *peek_msh(raw)
        kind = f"{adt.message_type}^{adt.trigger_event}"
        key = (
            "hl7.ack."
            + hashlib.sha256(
                f"{adt.sending_application}|{adt.sending_facility}|{adt.control_id}".encode()
            ).hexdigest()[:32]
        )
        digest = hashlib.sha256(adt.raw.encode()).hexdigest()
        # From the duplicate check to the ACK's record, one message at a time: two copies of
        # one message, or two messages of one new patient, must not both create it.
        with self.bundles.svc.conditional:
            return self._store_message(adt, raw, kind, key, digest)

    def _store_message(
        self, adt: AdtMessage, raw: bytes, kind: str, key: str, digest: str
    ) -> tuple[bytes, str, str]:
        seen = self.store.get_meta(key)
        if seen and seen.get("digest") == digest:
            return encode_ack(seen["ack"], raw), kind, adt.control_id
        failures_before = self.bundles.svc.bus.failure_count
        try:
            stored = self._stored(adt)
            adt = merge_stored(adt, stored["Patient"], stored["Encounter"])
            versions = {r: s["meta"]["versionId"] for r, s in stored.items() if s is not None}
            response = self.bundles.process(adt_to_transaction(adt, if_match=versions))
        except Hl7Error as exc:
            log.info("HL7 v2 message refused against the stored visit: %s", exc.code)
            return encode_ack(ack_for_error(raw, exc), raw), kind, adt.control_id
        except FhirError as exc:
            log.info("HL7 v2 message not stored: %s", type(exc).__name__)
            ack = build_ack(adt, "AE", f"Not stored: {exc.diagnostics}"[:200], error_code="207")
            return encode_ack(ack, raw), kind, adt.control_id
        if self.bundles.svc.bus.failure_count != failures_before:
            # Stored, but discharge processing failed: ask for a resend (it is idempotent)
            # rather than acknowledge work that did not happen.
            ack = build_ack(
                adt, "AE", "Stored, but follow-up processing failed; resend", error_code="207"
            )
            return encode_ack(ack, raw), kind, adt.control_id
        ack = build_ack(adt, "AA", self._outcome(adt, response))
        self.store.set_meta(key, {"digest": digest, "ack": ack})
        return encode_ack(ack, raw), kind, adt.control_id

    def _stored(self, adt: AdtMessage) -> dict[str, dict[str, Any] | None]:
        """The stored Patient and Encounter the message's conditional PUTs will replace."""
        find = self.bundles.svc.find_one
        return {
            r["resourceType"]: find(r["resourceType"], match_query(r))
            for r in (adt.patient, adt.encounter)
        }

    def _outcome(self, adt: AdtMessage, response: dict[str, Any]) -> str | None:
        """MSA-3 text: what happened to the visit's discharge (none for other events)."""
        if adt.action not in ("discharge", "cancel-discharge", "cancel-admit"):
            return None
        location = (response["entry"][1].get("response") or {}).get("location") or ""
        parts = location.split("/")
        if (
            len(parts) < 2
            or self.store.get_meta(discharge.DISCHARGE_MARKER.format(parts[1])) is None
        ):
            return None
        return discharge.outcome_text(self.store, parts[1])


_MSA = re.compile(rb"MSA\|(A[AER]|C[AER])")


def ack_code(ack: bytes) -> str:
    """MSA-1 of an encoded ACK ("?" when it has none)."""
    found = _MSA.search(ack)
    return found.group(1).decode() if found else "?"


def peek_msh(raw: bytes) -> tuple[str, str]:
    """(MSH-9 message type, MSH-10 control id) of a message that may not parse: for the
    log line of a refused message ("-" for what cannot be read)."""
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff\x0b \r\n")
    if not text.startswith("MSH") or len(text) < 4:
        return "-", "-"
    fields = re.split(r"[\r\n]", text, maxsplit=1)[0].split(text[3])
    kind = fields[8] if len(fields) > 8 else "-"
    control = fields[9] if len(fields) > 9 else "-"
    component = text[4] if len(text) > 4 else "^"
    kind = component.join(kind.split(component)[:2]) if kind else "-"
    return kind[:20] or "-", control[:40] or "-"


def receive_remote(svc: ResourceService, resource: dict[str, Any]) -> list[dict[str, Any]]:
    """Store a resource delivered by the remote server's Subscription (as a remote change)
    and publish it, so a finished Encounter runs discharge processing."""
    from fhircare.fhir.validation import validate_resource

    validate_resource(resource)
    rtype, rid = resource["resourceType"], resource.get("id")
    if not rid:
        raise FhirError("A Subscription notification resource needs an id", status=400)
    results = svc.store.commit(
        [WriteOp("update", rtype, id=rid, resource=resource, origin="remote")]
    )
    written = [r.resource for r in results if r.resource is not None]
    return written + svc.publish(written)
