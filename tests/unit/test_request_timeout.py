"""The request timeout (FHIRCARE_REQUEST_TIMEOUT), the observability layer's: a request still
unanswered is a 503 OperationOutcome; a fast one passes through untouched."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fhircare.api.observe import ObservabilityMiddleware


async def _call(app: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/fhir/Patient", "headers": []}
    await app(scope, receive, send)
    return sent


def test_a_request_past_the_timeout_is_answered_503() -> None:
    async def never_answers(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.Event().wait()

    sent = asyncio.run(_call(ObservabilityMiddleware(never_answers, timeout=0.05)))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 503
    body = json.loads(sent[1]["body"])
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "timeout"


def test_a_fast_request_passes_through() -> None:
    async def answers(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent = asyncio.run(_call(ObservabilityMiddleware(answers, timeout=30)))
    assert [m.get("status") for m in sent] == [200, None]
    assert sent[1]["body"] == b"{}"
