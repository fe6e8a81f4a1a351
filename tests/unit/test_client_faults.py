"""FhirClient against a mocked server: every fault maps to a typed error or a safe retry."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import httpx
import pytest
import respx

from fhircare.fhir.errors import (
    BadRequest,
    Conflict,
    Gone,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from fhircare.remote.client import (
    BadResponse,
    FhirClient,
    RemoteUnavailable,
    ServerError,
    TooManyRequests,
)
from fhircare.remote.retry import RetryPolicy, parse_retry_after

BASE = "http://fhir.test/fhir"
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
PATIENT = {"resourceType": "Patient", "id": "p1", "meta": {"versionId": "1"}}


def oo(diagnostics: str, code: str = "processing") -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(sleeps: Sleeps):
    policy = RetryPolicy(
        max_attempts=4,
        base_delay=0.1,
        max_delay=2.0,
        max_retry_after=30.0,
        sleep=sleeps,
        clock=lambda: NOW,
        rng=random.Random(7),
    )
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        c = FhirClient(BASE, retry=policy)
        c.router = router  # type: ignore[attr-defined]
        yield c
        c.close()


def test_500_is_a_server_error_and_not_retried(client, sleeps) -> None:
    route = client.router.get("/Patient/p1").mock(return_value=httpx.Response(500, json=oo("boom")))
    with pytest.raises(ServerError) as info:
        client.read("Patient", "p1")
    assert route.call_count == 1
    assert sleeps == []
    assert info.value.http_status == 500
    assert "boom" in info.value.diagnostics


def test_503_then_success_is_retried(client, sleeps) -> None:
    route = client.router.get("/Patient/p1").mock(
        side_effect=[httpx.Response(503), httpx.Response(503), httpx.Response(200, json=PATIENT)]
    )
    assert client.read("Patient", "p1") == PATIENT
    assert route.call_count == 3
    assert len(sleeps) == 2
    # full jitter: each wait within [0, base * 2**n]
    assert 0 <= sleeps[0] <= 0.1 and 0 <= sleeps[1] <= 0.2


def test_503_gives_up_after_max_attempts(client, sleeps) -> None:
    route = client.router.get("/Patient/p1").mock(return_value=httpx.Response(503))
    with pytest.raises(ServerError):
        client.read("Patient", "p1")
    assert route.call_count == 4
    assert len(sleeps) == 3


def test_429_retry_after_seconds(client, sleeps) -> None:
    client.router.get("/Patient/p1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(200, json=PATIENT),
        ]
    )
    assert client.read("Patient", "p1")["id"] == "p1"
    assert sleeps == [7.0]


def test_429_retry_after_http_date(client, sleeps) -> None:
    client.router.get("/Patient/p1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "Wed, 01 May 2024 12:00:12 GMT"}),
            httpx.Response(200, json=PATIENT),
        ]
    )
    client.read("Patient", "p1")
    assert sleeps == [12.0]


def test_retry_after_is_capped(client, sleeps) -> None:
    client.router.get("/Patient/p1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3600"}),
            httpx.Response(200, json=PATIENT),
        ]
    )
    client.read("Patient", "p1")
    assert sleeps == [30.0]


def test_429_exhausted_is_too_many_requests(client, sleeps) -> None:
    client.router.get("/Patient/p1").mock(return_value=httpx.Response(429))
    with pytest.raises(TooManyRequests):
        client.read("Patient", "p1")


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("5", NOW) == 5.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", NOW) == 0.0  # in the past
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_read_timeout_on_get_is_retried(client, sleeps) -> None:
    route = client.router.get("/Patient/p1").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200, json=PATIENT)]
    )
    assert client.read("Patient", "p1")["id"] == "p1"
    assert route.call_count == 2


def test_read_timeout_on_plain_post_is_not_retried(client, sleeps) -> None:
    route = client.router.post("/Patient").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(RemoteUnavailable) as info:
        client.create({"resourceType": "Patient"})
    assert route.call_count == 1
    assert info.value.maybe_applied is True
    assert sleeps == []


def test_503_on_plain_post_is_not_retried(client) -> None:
    route = client.router.post("/Patient").mock(return_value=httpx.Response(503))
    with pytest.raises(ServerError):
        client.create({"resourceType": "Patient"})
    assert route.call_count == 1


def test_connect_error_on_plain_post_is_retried(client) -> None:
    created = {"resourceType": "Patient", "id": "new", "meta": {"versionId": "1"}}
    route = client.router.post("/Patient").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(201, json=created)]
    )
    assert client.create({"resourceType": "Patient"})["id"] == "new"
    assert route.call_count == 2


def test_conditional_create_is_retried_on_read_timeout(client) -> None:
    created = {"resourceType": "Patient", "id": "new", "meta": {"versionId": "1"}}
    route = client.router.post("/Patient").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.Response(201, json=created)]
    )
    client.create({"resourceType": "Patient"}, if_none_exist="identifier=urn:x|1")
    assert route.call_count == 2
    assert route.calls[-1].request.headers["If-None-Exist"] == "identifier=urn:x|1"


@pytest.mark.parametrize("exc", [httpx.RemoteProtocolError("reset"), httpx.ReadError("reset")])
def test_connection_reset_on_get_is_retried(client, exc) -> None:
    route = client.router.get("/Patient/p1").mock(
        side_effect=[exc, httpx.Response(200, json=PATIENT)]
    )
    assert client.read("Patient", "p1")["id"] == "p1"
    assert route.call_count == 2


def test_connection_reset_on_plain_post_is_not_retried(client) -> None:
    route = client.router.post("/Patient").mock(side_effect=httpx.RemoteProtocolError("reset"))
    with pytest.raises(RemoteUnavailable) as info:
        client.create({"resourceType": "Patient"})
    assert route.call_count == 1
    assert info.value.maybe_applied is True


def test_connect_error_exhausted_is_remote_unavailable(client) -> None:
    route = client.router.get("/Patient/p1").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(RemoteUnavailable) as info:
        client.read("Patient", "p1")
    assert route.call_count == 4
    assert info.value.maybe_applied is False


def test_malformed_json_body_is_bad_response(client) -> None:
    route = client.router.get("/Patient/p1").mock(
        return_value=httpx.Response(
            200, content=b'{"resourceType": "Pat', headers={"Content-Type": "application/fhir+json"}
        )
    )
    with pytest.raises(BadResponse):
        client.read("Patient", "p1")
    assert route.call_count == 4  # an idempotent read is retried (truncation is transient)


def test_malformed_body_then_good_is_retried(client) -> None:
    client.router.get("/Patient/p1").mock(
        side_effect=[
            httpx.Response(200, content=b"<html>proxy</html>"),
            httpx.Response(200, json=PATIENT),
        ]
    )
    assert client.read("Patient", "p1") == PATIENT


def test_non_resource_json_is_bad_response(client) -> None:
    client.router.get("/Patient/p1").mock(return_value=httpx.Response(200, json=[1, 2]))
    with pytest.raises(BadResponse):
        client.read("Patient", "p1")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequest),
        (404, NotFound),
        (409, Conflict),
        (410, Gone),
        (412, PreconditionFailed),
        (422, Unprocessable),
    ],
)
def test_operation_outcome_becomes_typed_error(client, status, error) -> None:
    client.router.get("/Patient/p1").mock(
        return_value=httpx.Response(status, json=oo(f"HAPI-0{status}: detail here"))
    )
    with pytest.raises(error) as info:
        client.read("Patient", "p1")
    assert info.value.status == status
    assert info.value.diagnostics == f"HAPI-0{status}: detail here"
    assert info.value.server_outcome["issue"][0]["code"] == "processing"


def test_if_match_header_on_update(client) -> None:
    route = client.router.put("/Patient/p1").mock(
        return_value=httpx.Response(412, json=oo("version conflict"))
    )
    with pytest.raises(PreconditionFailed):
        client.update(PATIENT, if_match="1")
    assert route.calls[0].request.headers["If-Match"] == 'W/"1"'
    assert route.call_count == 1


def bundle(entries: list[dict], kind: str = "searchset", next_url: str | None = None) -> dict:
    b = {"resourceType": "Bundle", "type": kind, "entry": entries}
    if next_url:
        b["link"] = [{"relation": "self", "url": "x"}, {"relation": "next", "url": next_url}]
    return b


def pat(i: int) -> dict:
    return {"resource": {"resourceType": "Patient", "id": f"p{i}"}, "search": {"mode": "match"}}


def test_paging_follows_absolute_and_relative_next_links(client) -> None:
    first = client.router.get("/Patient", params={"name": "x"}).mock(
        return_value=httpx.Response(
            200, json=bundle([pat(1), pat(2)], next_url=f"{BASE}?_getpages=abc&_getpagesoffset=2")
        )
    )
    second = client.router.get("/", params={"_getpages": "abc", "_getpagesoffset": "2"}).mock(
        return_value=httpx.Response(200, json=bundle([pat(3)], next_url="Patient?page=3&x=1"))
    )
    third = client.router.get("/Patient", params={"page": "3", "x": "1"}).mock(
        return_value=httpx.Response(
            200,
            json=bundle(
                [
                    pat(4),
                    {
                        "resource": {"resourceType": "Organization", "id": "o"},
                        "search": {"mode": "include"},
                    },
                ]
            ),
        )
    )
    it = client.search("Patient", [("name", "x")])
    assert next(it)["id"] == "p1"
    assert second.call_count == 0  # lazy: the next page is fetched only when needed
    ids = [r["id"] for r in it]
    assert ids == ["p2", "p3", "p4"]  # the included Organization is not a match
    assert (first.call_count, second.call_count, third.call_count) == (1, 1, 1)
    # the next link is followed exactly as given
    assert str(second.calls[0].request.url) == f"{BASE}?_getpages=abc&_getpagesoffset=2"
    assert str(third.calls[0].request.url) == f"{BASE}/Patient?page=3&x=1"


def test_paging_absolute_link_used_verbatim(client) -> None:
    client.router.get("/Observation").mock(
        return_value=httpx.Response(
            200, json=bundle([], next_url="http://fhir.test/fhir?_getpages=q1&_count=2")
        )
    )
    page2 = client.router.get("", params={"_getpages": "q1", "_count": "2"}).mock(
        return_value=httpx.Response(200, json=bundle([]))
    )
    assert client.search_all("Observation") == []
    assert str(page2.calls[0].request.url) == "http://fhir.test/fhir?_getpages=q1&_count=2"


def test_paging_loop_is_detected(client) -> None:
    client.router.get("/Patient").mock(
        return_value=httpx.Response(200, json=bundle([pat(1)], next_url="Patient?page=2"))
    )
    with pytest.raises(BadResponse):
        client.search_all("Patient")


def tx(n: int, method: str = "PUT") -> dict:
    entries = []
    for i in range(n):
        req = {"method": method, "url": f"Patient/p{i}" if method == "PUT" else "Patient"}
        entries.append({"resource": {"resourceType": "Patient", "id": f"p{i}"}, "request": req})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def tx_response(n: int) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [{"response": {"status": "200 OK", "etag": 'W/"1"'}} for _ in range(n)],
    }


def test_partial_transaction_response_is_bad_response_and_retried_when_idempotent(client) -> None:
    route = client.router.post("").mock(
        side_effect=[
            httpx.Response(200, json=tx_response(2)),
            httpx.Response(200, json=tx_response(3)),
        ]
    )
    out = client.transaction(tx(3))
    assert len(out["entry"]) == 3
    assert route.call_count == 2


def test_partial_transaction_response_with_plain_posts_is_not_retried(client) -> None:
    route = client.router.post("").mock(return_value=httpx.Response(200, json=tx_response(2)))
    with pytest.raises(BadResponse, match="2 entries for 3"):
        client.transaction(tx(3, method="POST"))
    assert route.call_count == 1


def test_transaction_response_without_status_is_bad_response(client) -> None:
    resp = tx_response(1)
    resp["entry"][0]["response"] = {}
    client.router.post("").mock(return_value=httpx.Response(200, json=resp))
    with pytest.raises(BadResponse):
        client.transaction(tx(1, method="POST"))


def test_transaction_wrong_bundle_type_is_bad_response(client) -> None:
    resp = tx_response(1)
    resp["type"] = "batch-response"
    client.router.post("").mock(return_value=httpx.Response(200, json=resp))
    with pytest.raises(BadResponse):
        client.transaction(tx(1, method="POST"))


def test_idempotent_transaction_retried_on_read_timeout(client) -> None:
    route = client.router.post("").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200, json=tx_response(2))]
    )
    client.transaction(tx(2))
    assert route.call_count == 2
    sent = json.loads(route.calls[1].request.content)
    assert sent["type"] == "transaction" and len(sent["entry"]) == 2


def test_non_idempotent_transaction_not_retried_on_read_timeout(client) -> None:
    route = client.router.post("").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(RemoteUnavailable):
        client.transaction(tx(2, method="POST"))
    assert route.call_count == 1


def test_create_without_body_uses_location(client) -> None:
    client.router.post("/Patient").mock(
        return_value=httpx.Response(
            201, headers={"Location": f"{BASE}/Patient/abc/_history/1", "ETag": 'W/"1"'}
        )
    )
    out = client.create({"resourceType": "Patient"})
    assert out["id"] == "abc" and out["meta"]["versionId"] == "1"


def test_history_and_delete(client) -> None:
    client.router.get("/Patient/p1/_history", params={"_since": "2024-01-01"}).mock(
        return_value=httpx.Response(
            200, json=bundle([{"request": {"method": "DELETE"}}], "history")
        )
    )
    client.router.delete("/Patient/p1").mock(
        return_value=httpx.Response(200, json=oo("ok"), headers={"ETag": 'W/"2"'})
    )
    assert len(list(client.history("Patient", "p1", since="2024-01-01"))) == 1
    assert client.delete("Patient", "p1") == "2"


def test_injected_transport_and_auth() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"resourceType": "CapabilityStatement"})

    class Token(httpx.Auth):
        def auth_flow(self, request):
            request.headers["Authorization"] = "Bearer t0k"
            yield request

    with FhirClient(BASE, transport=httpx.MockTransport(handler), auth=Token()) as c:
        assert c.capabilities()["resourceType"] == "CapabilityStatement"
    assert seen[0].headers["Authorization"] == "Bearer t0k"
    assert seen[0].headers["Accept"] == "application/fhir+json"
    assert str(seen[0].url) == f"{BASE}/metadata"
