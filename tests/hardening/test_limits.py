"""The limits in Settings are configurable from the environment and enforced:
FHIRCARE_MAX_BODY_BYTES, FHIRCARE_MAX_PAGE_SIZE and FHIRCARE_MAX_BUNDLE_ENTRIES."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fhircare.api.app import create_app
from fhircare.config import Settings
from tests.conftest import ServerProcess

FHIR = {"Content-Type": "application/fhir+json"}


def patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def transaction(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(f"Tx{i}"), "request": {"method": "POST", "url": "Patient"}}
            for i in range(n)
        ],
    }


@pytest.fixture
def limited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("FHIRCARE_MAX_BODY_BYTES", "3000")
    monkeypatch.setenv("FHIRCARE_MAX_PAGE_SIZE", "5")
    monkeypatch.setenv("FHIRCARE_MAX_BUNDLE_ENTRIES", "4")
    monkeypatch.setenv("FHIRCARE_AUDIT", "false")
    with TestClient(create_app(Settings(data=tmp_path / "data"))) as c:
        yield c


def _count(c: TestClient) -> int:
    return c.get("/fhir/Patient", params={"_summary": "count"}).json()["total"]


def test_max_body_bytes_from_the_environment(limited: TestClient) -> None:
    small = json.dumps(patient("S" * 2000)).encode()
    big = json.dumps(patient("B" * 3000)).encode()
    assert limited.post("/fhir/Patient", content=small, headers=FHIR).status_code == 201
    r = limited.post("/fhir/Patient", content=big, headers=FHIR)
    assert r.status_code == 413 and r.json()["resourceType"] == "OperationOutcome"
    assert "3000" in r.json()["issue"][0]["diagnostics"]
    # the limit holds for a body sent without Content-Length (chunked) and on every route
    chunked = limited.post("/fhir/Patient", content=iter([big[:2000], big[2000:]]), headers=FHIR)
    assert chunked.status_code == 413
    assert limited.post("/fhir", content=big, headers=FHIR).status_code == 413
    hl7 = b"MSH|^~\\&|A|B|C|D|202403050930||ADT^A01|X1|P|2.5.1\r" + b"Z" * 3000
    assert limited.post("/hl7v2", content=hl7).status_code == 413
    assert _count(limited) == 1


def test_max_page_size_caps_count_and_pages_with_next_links(limited: TestClient) -> None:
    for i in range(12):
        assert limited.post("/fhir/Patient", json=patient(f"Page{i}")).status_code == 201
    seen: list[str] = []
    url: str | None = "/fhir/Patient?_count=100"
    pages = 0
    while url:
        bundle = limited.get(url).json()
        pages += 1
        assert bundle["total"] == 12
        assert len(bundle["entry"]) <= 5
        seen += [e["resource"]["id"] for e in bundle["entry"]]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if nxt:
            parts = urllib.parse.urlsplit(nxt[0])
            assert dict(urllib.parse.parse_qsl(parts.query))["_count"] == "5"
            url = f"{parts.path}?{parts.query}"
        else:
            url = None
    assert pages == 3 and len(seen) == len(set(seen)) == 12
    history = limited.get("/fhir/Patient/_history", params={"_count": 100}).json()
    assert len(history["entry"]) == 5
    assert any(link["relation"] == "next" for link in history["link"])


def test_max_bundle_entries_for_transactions_and_batches(limited: TestClient) -> None:
    assert limited.post("/fhir", json=transaction(4)).status_code == 200
    for kind in ("transaction", "batch"):
        r = limited.post("/fhir", json={**transaction(5), "type": kind})
        assert r.status_code == 413, r.text
        assert r.json()["issue"][0]["code"] == "too-costly"
    assert _count(limited) == 4


@pytest.mark.slow
def test_limits_reach_a_served_process(tmp_path: Path) -> None:
    env = {
        "FHIRCARE_MAX_BODY_BYTES": "2500",
        "FHIRCARE_MAX_PAGE_SIZE": "3",
        "FHIRCARE_MAX_BUNDLE_ENTRIES": "2",
    }
    srv = ServerProcess(tmp_path / "srv", env=env).start()
    try:
        base = srv.base
        big = patient("B" * 3000)
        assert httpx.post(f"{base}/Patient", json=big).status_code == 413
        assert httpx.post(base, json=transaction(3)).status_code == 413
        assert httpx.post(base, json=transaction(2)).status_code == 200
        for i in range(3):
            assert httpx.post(f"{base}/Patient", json=patient(f"P{i}")).status_code == 201
        page = httpx.get(f"{base}/Patient", params={"_count": 50}).json()
        assert page["total"] == 5 and len(page["entry"]) == 3
        assert any(link["relation"] == "next" for link in page["link"])
    finally:
        srv.stop()
