"""The least an HTTP server on fhircare's stack can do per read: a bare ASGI app, served by
uvicorn with the loop and parser `fhircare serve` uses (uvloop, httptools), that answers
`GET /fhir/Patient/{id}` with a fixed Patient of the benchmark's size and the id asked for.
No routing, validation, store, audit, logging or metrics: `bench_floor.py` measures it as
the floor under fhircare's (and any Python ASGI server's) one-client read.
"""

from __future__ import annotations

from typing import Any

HEAD = b'{"resourceType":"Patient","id":"'
TAIL = (
    b'","meta":{"versionId":"1","lastUpdated":"2026-12-02T10:00:00.000+00:00"},'
    b'"identifier":[{"system":"http://fhircare.org/fhir/sid/bench-mrn",'
    b'"value":"0123456789abcdef"}],"name":[{"family":"Bench","given":["Load"]}],'
    b'"gender":"female","birthDate":"1961-03-02"}'
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A Patient whose id is the path's last segment; 404 for anything but a GET of one."""
    if scope["type"] != "http":
        return
    parts = scope["path"].split("/")
    found = scope["method"] == "GET" and len(parts) == 4 and parts[1:3] == ["fhir", "Patient"]
    body = HEAD + parts[-1].encode() + TAIL if found else b""
    await send(
        {
            "type": "http.response.start",
            "status": 200 if found else 404,
            "headers": [
                (b"content-type", b"application/fhir+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
