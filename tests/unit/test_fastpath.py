"""The fast path of read, search and create (`fhircare.api.fastpath`): it serves only paths no
other route can claim, and answers as FastAPI's route does (errors as OperationOutcomes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient
from starlette.routing import Mount

from fhircare.api import fastpath
from fhircare.api.fastpath import CREATE, FAST_ROUTES, READ, SEARCH, fast_route

PATIENT = {"resourceType": "Patient", "name": [{"family": "Fast"}], "gender": "female"}


def _routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, set[str], Any]]:
    """Every registered route (through included routers) as (template, methods, route)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Mount):
            yield prefix + route.path + "/{path:path}", {"GET", "POST"}, route
        elif hasattr(route, "path"):
            yield prefix + route.path, set(getattr(route, "methods", None) or ()), route


def _could_claim(template: str, method: str) -> bool:
    """Could the template match `/fhir/<Type>` or `/fhir/<Type>/<id>` with the method the
    fast path serves there?"""
    if ":path}" in template:  # matches across segments: claims what its literal head leads to
        return "/fhir/Patient/x".startswith(template.split("{", 1)[0]) and method != "PUT"
    if not template.startswith("/fhir/"):
        return False
    segments = template[len("/fhir/") :].split("/")

    def param(s: str) -> bool:
        return s.startswith("{") and s.endswith("}")

    if not (param(segments[0]) or fastpath.registry.is_resource_type(segments[0])):
        return False
    if len(segments) == 1:
        return method in ("GET", "POST")
    if len(segments) == 2:
        return method == "GET" and (param(segments[1]) or bool(fastpath.ID.fullmatch(segments[1])))
    return False


def test_no_other_route_can_claim_a_fast_path(client: TestClient) -> None:
    claims = [
        (template, method)
        for template, methods, route in _routes(client.app.routes)  # type: ignore[attr-defined]
        for method in methods
        if route not in FAST_ROUTES and _could_claim(template, method)
    ]
    assert claims == []
    # the check itself sees the routes it must (else it would pass on nothing)
    templates = {t for t, _, _ in _routes(client.app.routes)}  # type: ignore[attr-defined]
    assert {"/fhir/{resource_type}/{resource_id}", "/fhir/.well-known/smart-configuration"} <= (
        templates
    )
    assert _could_claim("/fhir/Patient/current", "GET")
    assert _could_claim("/fhir/{resource_type}", "POST")


def test_the_shapes_it_serves_and_those_it_leaves_to_the_router() -> None:
    assert fast_route("GET", "/fhir/Patient/abc-1.2") == (
        READ,
        {"resource_type": "Patient", "resource_id": "abc-1.2"},
    )
    assert fast_route("GET", "/fhir/Observation") == (SEARCH, {"resource_type": "Observation"})
    assert fast_route("POST", "/fhir/Patient") == (CREATE, {"resource_type": "Patient"})
    for method, path in [
        ("GET", "/fhir/Patient/$everything"),
        ("GET", "/fhir/Patient/_history"),
        ("GET", "/fhir/Patient/x/_history"),
        ("GET", "/fhir/metadata"),
        ("GET", "/fhir/bulk/job"),
        ("GET", "/fhir/.well-known/smart-configuration"),
        ("GET", "/fhir/NotAType/1"),
        ("PUT", "/fhir/Patient/1"),
        ("HEAD", "/fhir/Patient/1"),
        ("POST", "/fhir/Patient/1"),
        ("GET", "/fhir/Patient/" + "x" * 65),
        ("GET", "/fhir/Patient/a\n"),
        ("GET", "/fhir"),
    ]:
        assert fast_route(method, path) is None, (method, path)


def test_it_answers_and_names_the_route_as_fastapi_does(client: TestClient) -> None:
    made = client.post("/fhir/Patient", json=PATIENT)
    assert made.status_code == 201 and made.headers["location"].startswith("http")
    pid = made.json()["id"]
    read = client.get(f"/fhir/Patient/{pid}")
    assert read.status_code == 200 and read.json()["id"] == pid
    assert read.headers["etag"] == 'W/"1"' and read.headers["x-request-id"]
    found = client.get("/fhir/Patient", params={"family": "Fast"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [pid]
    # trailing slash and _format negotiated by the edge outside it
    assert client.get(f"/fhir/Patient/{pid}/", params={"_format": "json"}).status_code == 200
    assert client.get(f"/fhir/Patient/{pid}", params={"_format": "xml"}).status_code == 406


def test_its_errors_are_operation_outcomes(client: TestClient) -> None:
    missing = client.get("/fhir/Patient/nope")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    gone_wrong = client.post(
        "/fhir/Patient", content=b"{not json", headers={"content-type": "application/fhir+json"}
    )
    assert gone_wrong.status_code == 400
    assert gone_wrong.json()["issue"][0]["severity"] == "error"
    bad_param = client.get("/fhir/Patient", params={"no-such-param": "x"})
    assert bad_param.status_code == 400
    assert bad_param.json()["resourceType"] == "OperationOutcome"
    invalid = client.post("/fhir/Patient", json={**PATIENT, "gender": "sometimes"})
    assert invalid.status_code == 422
    assert invalid.json()["resourceType"] == "OperationOutcome"
