"""fhircare against HAPI with the official image's stock defaults: the 60 s search cache,
ALPHANUMERIC client ids, 409 on a stale If-Match, no rest-hook, no $export.

Each test first shows the stock behaviour it depends on (so it cannot pass against a
friendlier server), then that fhircare is right in spite of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhircare.fhir.errors import FhirError
from fhircare.remote.client import FhirClient
from fhircare.remote.retry import RetryPolicy
from fhircare.remote.sync import pull, push, resolve, status
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore
from fhircare.store.remote import RemoteStore, meta_id

pytestmark = pytest.mark.hapi

RUN_TAG = "http://fhircare.org/fhir/CodeSystem/test-run"
JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def run() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def raw(hapi_base_url: str):
    """A plain client that does not ask HAPI to bypass its search cache."""
    with httpx.Client(base_url=hapi_base_url, timeout=30, headers=JSON) as c:
        yield c


@pytest.fixture
def hapi(hapi_base_url: str):
    with FhirClient(hapi_base_url, retry=RetryPolicy(max_attempts=4, base_delay=0.2)) as c:
        yield c


@pytest.fixture
def local(tmp_path: Path):
    s = EmbeddedStore(tmp_path / "local", fsync=False)
    yield s
    s.close()


def patient(run: str, i: int, family: str | None = None) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"{run}-p{i}",
        "meta": {"tag": [{"system": RUN_TAG, "code": run}]},
        "name": [{"family": family or f"Stock{i}"}],
    }


def put_local(store: EmbeddedStore, *resources: dict[str, Any]) -> None:
    store.commit([WriteOp("update", r["resourceType"], id=r["id"], resource=r) for r in resources])


def test_searches_bypass_the_search_cache_on_every_page(raw, hapi, run) -> None:
    query = [("_tag", f"{RUN_TAG}|{run}"), ("_sort", "_lastUpdated"), ("_count", "7")]
    for i in range(20):
        hapi.update(patient(run, i))
    warm = raw.get("/Patient", params=query).json()
    for i in range(20, 32):
        hapi.update(patient(run, i))
    cached = raw.get("/Patient", params=query).json()
    assert cached["link"] == warm["link"]  # stock HAPI: the same search, from its cache
    ids = [r["id"] for r in hapi.search("Patient", query)]
    assert len(ids) == len(set(ids)) == 32  # five pages, every one fresh
    assert f"{run}-p31" in ids


def test_pull_after_a_warm_cache_sees_new_writes(local, raw, hapi, run) -> None:
    where = [("_tag", f"{RUN_TAG}|{run}")]
    hapi.update(patient(run, 0))
    assert pull(local, hapi, types=["Patient"], where=where).created == 1
    pull(local, hapi, types=["Patient"], where=where)  # the next pull's search, now cached
    hapi.update(patient(run, 1))
    hapi.update(patient(run, 0, "Renamed"))
    report = pull(local, hapi, types=["Patient"], where=where)
    assert (report.created, report.updated) == (1, 1)
    assert local.read("Patient", f"{run}-p0")["name"] == [{"family": "Renamed"}]


def test_push_never_overwrites_an_edit_made_in_hapi(local, raw, hapi, run) -> None:
    pid = f"{run}-p0"
    put_local(local, patient(run, 0), patient(run, 1))
    assert push(local, hapi).pushed == 2
    stale = raw.put(f"/Patient/{pid}", json=patient(run, 0), headers={"If-Match": 'W/"0"'})
    assert stale.status_code == 409  # stock HAPI: a stale If-Match is a 409, not a 412
    hapi.update(patient(run, 0, "EditedInHapi"))  # a nurse edits the chart in HAPI
    put_local(local, patient(run, 0, "EditedHere"), patient(run, 1, "AlsoHere"))
    report = push(local, hapi)
    assert report.conflicts == [f"Patient/{pid}"] and report.pushed == 1
    assert hapi.read("Patient", pid)["name"] == [{"family": "EditedInHapi"}]
    assert hapi.read("Patient", f"{run}-p1")["name"] == [{"family": "AlsoHere"}]
    assert list(status(local)["conflicts"]) == [f"Patient/{pid}"]
    resolve(local, hapi, "Patient", pid, keep="local")
    assert hapi.read("Patient", pid)["name"] == [{"family": "EditedHere"}]


@pytest.mark.parametrize("policy", ["remote-wins", "local-wins"])
def test_push_settles_conflicts_under_the_policy(local, hapi, run, policy) -> None:
    pid = f"{run}-p0"
    put_local(local, patient(run, 0))
    push(local, hapi)
    hapi.update(patient(run, 0, "Theirs"))
    put_local(local, patient(run, 0, "Mine"))
    report = push(local, hapi, policy=policy)
    winner = "Theirs" if policy == "remote-wins" else "Mine"
    assert (report.remote_wins, report.local_wins) == (
        (1, 0) if policy == "remote-wins" else (0, 1)
    )
    assert hapi.read("Patient", pid)["name"] == [{"family": winner}]
    assert local.read("Patient", pid)["name"] == [{"family": winner}]
    assert push(local, hapi).pushed == 0 and status(local)["conflicts"] == {}


def test_delete_of_a_resource_edited_in_hapi_is_a_conflict(local, hapi, run) -> None:
    pid = f"{run}-p0"
    put_local(local, patient(run, 0))
    push(local, hapi)
    hapi.update(patient(run, 0, "StillNeeded"))
    local.commit([WriteOp("delete", "Patient", id=pid)])
    report = push(local, hapi)
    assert report.conflicts == [f"Patient/{pid}"] and report.deleted == 0
    assert hapi.read("Patient", pid)["name"] == [{"family": "StillNeeded"}]


def test_refused_ids_make_sync_push_fail_and_name_them(tmp_path: Path, hapi_base_url, run) -> None:
    data = tmp_path / "data"
    numeric = str(10**11 + int(run[:8], 16))  # digits only: HAPI-0960 on a stock server
    store = EmbeddedStore(data)
    try:  # written straight to the store, as data from before sync was configured would be
        put_local(store, {"resourceType": "Patient", "id": numeric}, patient(run, 0))
    finally:
        store.close()
    env = {**os.environ, "FHIRCARE_HAPI_URL": hapi_base_url, "FHIRCARE_SEED_DEFINITIONS": "false"}
    cli = [sys.executable, "-m", "fhircare", "sync", "push", "--data", str(data)]
    result = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Patient/{numeric}" in result.stderr and "HAPI-0960" in result.stderr
    assert "Traceback" not in result.stderr
    assert "pushed 1 resources" in result.stdout  # the rest went through
    with FhirClient(hapi_base_url) as hapi:
        assert hapi.read("Patient", f"{run}-p0")["id"] == f"{run}-p0"


def test_remote_store_markers_survive_60_concurrent_writers(hapi_base_url, run) -> None:
    failures: list[str] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        key = f"test.{run}.shared" if i % 2 else f"test.{run}.{i}"
        with FhirClient(hapi_base_url) as c:  # one client each, as separate processes would
            try:
                RemoteStore(c).set_meta(key, {"writer": i})
            except FhirError as exc:
                with lock:
                    failures.append(exc.diagnostics)

    with ThreadPoolExecutor(60) as pool:
        list(pool.map(write, range(60)))
    assert failures == []
    with FhirClient(hapi_base_url) as c:
        store = RemoteStore(c)
        assert all(store.get_meta(f"test.{run}.{i}") == {"writer": i} for i in range(0, 60, 2))
        assert store.get_meta(f"test.{run}.shared")["writer"] in range(1, 60, 2)
        assert c.read("Basic", meta_id(f"test.{run}.0"))["id"].startswith("fhircare-meta-")


def test_remote_store_commits_ops_and_markers_together(hapi, run) -> None:
    store = RemoteStore(hapi)
    key = f"test.{run}.marker"
    bad = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    bad["subject"] = {"reference": f"Patient/{run}-missing"}  # refused: integrity on write
    with pytest.raises(FhirError):
        store.commit([WriteOp("create", "Observation", resource=bad)], meta={key: "done"})
    assert store.get_meta(key) is None  # nothing half-written
    [result] = store.commit(
        [WriteOp("update", "Patient", id=f"{run}-p0", resource=patient(run, 0))],
        meta={key: "done"},
    )
    assert result.version_id == "1" and store.get_meta(key) == "done"


def test_subscribe_without_rest_hook_says_which_setting(hapi_base_url, raw, run) -> None:
    endpoint = f"http://127.0.0.1:9/events/hapi/{run}"
    env = {**os.environ, "FHIRCARE_HAPI_URL": hapi_base_url}
    cli = [sys.executable, "-m", "fhircare", "sync", "subscribe", "--endpoint", endpoint]
    result = subprocess.run(
        [*cli, "--timeout", "3"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "hapi.fhir.subscription.resthook_enabled=true" in result.stderr
    left = raw.get(
        "/Subscription", params={"url": endpoint}, headers={"Cache-Control": "no-cache"}
    ).json()
    mine = [e["resource"] for e in left.get("entry", [])]
    assert mine == []  # not left stuck at "requested"


def test_recommended_profile_adds_bulk_export_and_rest_hook(hapi_base_url, hapi_recommended_url):
    kickoff = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
    stock = httpx.get(f"{hapi_base_url}/$export", params={"_type": "Patient"}, headers=kickoff)
    assert stock.status_code == 400  # stock: no Bulk Data export
    started = httpx.get(
        f"{hapi_recommended_url}/$export", params={"_type": "Patient"}, headers=kickoff
    )
    assert (
        started.status_code == 202 and "$export-poll-status" in started.headers["Content-Location"]
    )
    httpx.delete(started.headers["Content-Location"])  # cancel the job


def test_concurrent_discharges_with_hapi_as_the_store(hapi_base_url, run) -> None:
    """Discharges processed at the same time on the HAPI-backed store all finish: no
    Conflict on the shared state, each marker written once with its outputs."""
    from fhircare.bootstrap import build_container
    from fhircare.config import Settings
    from fhircare.transitions import discharge

    settings = Settings(store="hapi", hapi_url=hapi_base_url, audit=False)
    ended = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)  # in the window
    container = build_container(settings)  # seeds the definitions into HAPI once
    try:
        store = container.store
        encounters = []
        for i in range(8):
            pid, eid = f"{run}-dp{i}", f"{run}-de{i}"
            store.commit(
                [
                    WriteOp("update", "Patient", id=pid, resource=patient(run, i) | {"id": pid}),
                    WriteOp(
                        "update",
                        "Encounter",
                        id=eid,
                        resource={
                            "resourceType": "Encounter",
                            "status": "finished",
                            "class": {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                "code": "IMP",
                            },
                            "subject": {"reference": f"Patient/{pid}"},
                            "period": {
                                "start": (ended - timedelta(days=4)).isoformat(),
                                "end": ended.isoformat(),
                            },
                        },
                    ),
                ]
            )
            encounters.append(store.read("Encounter", eid))
        with ThreadPoolExecutor(8) as pool:
            written = list(pool.map(lambda e: discharge.process_discharge(store, e), encounters))
        ours = {e["id"] for e in encounters}
        assert not [e for e in discharge.find_unprocessed(store) if e["id"] in ours]
        for enc, out in zip(encounters, written, strict=True):
            assert store.get_meta(discharge.DISCHARGE_MARKER.format(enc["id"])) is not None
            made = {r["id"] for r in out if r["resourceType"] == "Task"}
            assert made, enc["id"]
            stored = store.search("Task", [("_id", ",".join(sorted(made)))])
            assert {t["id"] for t in stored} == made  # every output is in HAPI, once
    finally:
        container.close()
