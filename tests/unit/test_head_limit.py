"""`HeadLimit`, the head limit under granian: a request whose request line and headers
exceed the limit is answered 431 with an OperationOutcome and never reaches the app."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fhircare.commands.header_limit import HeadLimit


def _call(limit: int, headers: list[tuple[bytes, bytes]]) -> tuple[list[dict[str, Any]], bool]:
    reached = False

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal reached
        reached = True
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/fhir/Patient",
        "raw_path": b"/fhir/Patient",
        "query_string": b"name=x",
        "headers": headers,
    }
    asyncio.run(HeadLimit(app, limit)(scope, receive, send))
    return sent, reached


def test_a_head_under_the_limit_reaches_the_app() -> None:
    sent, reached = _call(1024, [(b"host", b"x"), (b"x-pad", b"p" * 900)])
    assert reached
    assert sent[0]["status"] == 200


def test_a_head_over_the_limit_is_431_with_an_outcome() -> None:
    sent, reached = _call(1024, [(b"host", b"x"), (b"x-pad", b"p" * 1000)])
    assert not reached
    start, body = sent
    assert start["status"] == 431
    headers = dict(start["headers"])
    assert headers[b"connection"] == b"close"
    assert headers[b"content-type"] == b"application/fhir+json"
    outcome = json.loads(body["body"])
    assert outcome["issue"][0]["code"] == "too-long"
    assert int(headers[b"content-length"]) == len(body["body"])


def test_many_small_headers_count_together() -> None:
    sent, reached = _call(1024, [(b"x-h%d" % i, b"v" * 20) for i in range(40)])
    assert not reached
    assert sent[0]["status"] == 431
