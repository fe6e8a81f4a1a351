"""The HL7 v2 MLLP listener edge: `Hl7Intake` served over MLLP, for `fhircare serve`
(FHIRCARE_MLLP_PORT, on the server's own store) and `fhircare mllp`."""

from __future__ import annotations

import asyncio

from fhircare.observability.events import hl7_message
from fhircare.services.intake import Hl7Intake, peek_msh
from fhircare.transitions.hl7v2_ack import build_ack
from fhircare.transitions.mllp import serve_mllp


def allowed_clients(setting: str | None) -> set[str] | None:
    """FHIRCARE_MLLP_ALLOWED as a set of addresses (None: every client)."""
    if not setting:
        return None
    return {a.strip() for a in setting.split(",") if a.strip()}


async def start_mllp(
    intake: Hl7Intake, host: str, port: int, *, allowed: str | None = None
) -> asyncio.Server:
    """Listen on host:port; each message is handled in a worker thread (the store is
    synchronous) and answered once everything it caused is stored."""

    async def handler(raw: bytes) -> bytes:
        return await asyncio.to_thread(intake.handle, raw, "mllp")

    def on_error(raw: bytes, exc: Exception) -> bytes:
        kind, control = peek_msh(raw)
        hl7_message("mllp", kind, control, "AR")
        return build_ack(raw, "AR", f"Message refused: {type(exc).__name__}").encode()

    return await serve_mllp(
        host, port, handler, allowed_clients=allowed_clients(allowed), on_error=on_error
    )
