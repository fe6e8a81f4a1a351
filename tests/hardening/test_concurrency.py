"""Concurrent writers against a real `fhircare serve` process over HTTP: optimistic locking
holds (one winner per If-Match version), no update is lost, every created id is readable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess

FHIR = {"Content-Type": "application/fhir+json"}
pytestmark = pytest.mark.slow


def careplan(cid: str, pid: str, title: str) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "id": cid,
        "status": "active",
        "intent": "plan",
        "title": title,
        "subject": {"reference": f"Patient/{pid}"},
    }


def _patient(base: str) -> str:
    r = httpx.post(
        f"{base}/Patient", json={"resourceType": "Patient", "name": [{"family": "Race"}]}
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _run(n: int, fn: Callable[[int], Any]) -> list[Any]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n), timeout=60))


def test_if_match_race_has_exactly_one_winner(server: ServerProcess) -> None:
    base = server.base
    pid = _patient(base)
    assert httpx.put(f"{base}/CarePlan/race", json=careplan("race", pid, "v1")).status_code == 201
    for round_ in range(5):
        version = str(round_ + 1)
        barrier = threading.Barrier(2)

        def write(i: int, version: str = version, barrier: threading.Barrier = barrier) -> int:
            with httpx.Client(timeout=30) as c:
                body = careplan("race", pid, f"round {version} writer {i}")
                barrier.wait(10)
                headers = {**FHIR, "If-Match": f'W/"{version}"'}
                return c.put(f"{base}/CarePlan/race", json=body, headers=headers).status_code

        assert sorted(_run(2, write)) == [200, 412], f"round {round_}"
        current = httpx.get(f"{base}/CarePlan/race").json()["meta"]["versionId"]
        assert current == str(round_ + 2)  # after the first round: version 2


def test_no_lost_update_under_concurrent_writes(server: ServerProcess) -> None:
    base = server.base
    pid = _patient(base)
    assert (
        httpx.put(f"{base}/CarePlan/busy", json=careplan("busy", pid, "start")).status_code == 201
    )
    writers, per_writer = 8, 50
    acknowledged: dict[str, str] = {}  # versionId -> the title its writer sent
    lock = threading.Lock()
    start = time.monotonic()

    def write(w: int) -> int:
        ok = 0
        with httpx.Client(timeout=30) as c:
            for i in range(per_writer):
                title = f"writer {w} update {i}"
                r = c.put(f"{base}/CarePlan/busy", json=careplan("busy", pid, title), headers=FHIR)
                assert r.status_code == 200, r.text
                vid = r.json()["meta"]["versionId"]
                assert r.headers["ETag"] == f'W/"{vid}"'
                with lock:
                    assert vid not in acknowledged, f"version {vid} acknowledged twice"
                    acknowledged[vid] = title
                ok += 1
        return ok

    successes = sum(_run(writers, write))
    elapsed = time.monotonic() - start
    assert successes == writers * per_writer
    final = httpx.get(f"{base}/CarePlan/busy").json()
    assert final["meta"]["versionId"] == str(1 + successes)
    with httpx.Client(timeout=30) as c:
        for vid, title in acknowledged.items():
            got = c.get(f"{base}/CarePlan/busy/_history/{vid}")
            assert got.status_code == 200 and got.json()["title"] == title, (vid, got.text)
    history = httpx.get(f"{base}/CarePlan/busy/_history", params={"_count": 1000}).json()
    assert history["total"] == 1 + successes
    print(f"concurrent_updates={successes} seconds={elapsed:.2f}")


def test_concurrent_creates_are_all_readable(server: ServerProcess) -> None:
    base = server.base
    pid = _patient(base)
    writers, per_writer = 8, 20

    def create(w: int) -> list[str]:
        ids = []
        with httpx.Client(timeout=30) as c:
            for i in range(per_writer):
                body = careplan("x", pid, f"created by {w}/{i}")
                del body["id"]
                r = c.post(f"{base}/CarePlan", json=body, headers=FHIR)
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
        return ids

    ids = [i for chunk in _run(writers, create) for i in chunk]
    assert len(ids) == len(set(ids)) == writers * per_writer
    with httpx.Client(timeout=30) as c:
        for rid in ids:
            assert c.get(f"{base}/CarePlan/{rid}").status_code == 200, rid
        found = c.get(f"{base}/CarePlan", params={"patient": pid, "_summary": "count"}).json()
    assert found["total"] == len(ids)
