"""Sync against the real HAPI FHIR JPA server: push, read back, pull, conflicts, outage.

Each test tags what it writes with a fresh run code (`meta.tag`) and uses ids unique to
the run, so tests share the session's HAPI without seeing each other's data.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhircare.remote.client import FhirClient, RemoteUnavailable
from fhircare.remote.retry import RetryPolicy
from fhircare.remote.sync import PUSH_SEQ, pull, push, resolve, status
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore
from fhircare.store.remote import RemoteStore

pytestmark = pytest.mark.hapi

RUN_TAG = "http://fhircare.org/fhir/CodeSystem/test-run"
IDENT = "http://fhircare.org/fhir/sid/test-resource"


@pytest.fixture
def run() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def hapi(hapi_base_url: str) -> Iterator[FhirClient]:
    with FhirClient(hapi_base_url, retry=RetryPolicy(max_attempts=4, base_delay=0.2)) as c:
        yield c


@pytest.fixture
def local(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(tmp_path / "local")
    yield s
    s.close()


def tagged(resource: dict[str, Any], run: str) -> dict[str, Any]:
    rid = resource["id"]
    resource["meta"] = {"tag": [{"system": RUN_TAG, "code": run}]}
    resource["identifier"] = [{"system": IDENT, "value": f"{resource['resourceType']}/{rid}"}]
    return resource


def patient(run: str, i: int) -> dict[str, Any]:
    return tagged(
        {
            "resourceType": "Patient",
            "id": f"{run}-p{i}",
            "name": [{"family": f"Test{i}", "given": ["Sync"]}],
            "gender": "female" if i % 2 else "male",
            "birthDate": f"19{50 + i % 40}-0{1 + i % 9}-1{i % 10}",
        },
        run,
    )


def observation(run: str, i: int, pid: str, value: float) -> dict[str, Any]:
    return tagged(
        {
            "resourceType": "Observation",
            "id": f"{run}-o{i}",
            "status": "final",
            "code": {
                "coding": [{"system": "http://loinc.org", "code": "29463-7"}],
                "text": "Body weight",
            },
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2024-03-01T10:00:00Z",
            "valueQuantity": {
                "value": value,
                "unit": "kg",
                "system": "http://unitsofmeasure.org",
                "code": "kg",
            },
        },
        run,
    )


def goal(run: str, i: int, pid: str) -> dict[str, Any]:
    return tagged(
        {
            "resourceType": "Goal",
            "id": f"{run}-g{i}",
            "lifecycleStatus": "active",
            "description": {"text": "Keep weight stable after discharge"},
            "subject": {"reference": f"Patient/{pid}"},
        },
        run,
    )


def careplan(run: str, i: int, pid: str, gid: str) -> dict[str, Any]:
    return tagged(
        {
            "resourceType": "CarePlan",
            "id": f"{run}-cp{i}",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": f"Patient/{pid}"},
            "goal": [{"reference": f"Goal/{gid}"}],
        },
        run,
    )


def write_local(store: EmbeddedStore, resources: list[dict[str, Any]], chunk: int = 200) -> None:
    for start in range(0, len(resources), chunk):
        store.commit(
            [
                WriteOp("update", r["resourceType"], id=r["id"], resource=r)
                for r in resources[start : start + chunk]
            ]
        )


def dataset(run: str, patients: int) -> list[dict[str, Any]]:
    """Per patient: the Patient, two Observations, a Goal and a CarePlan, written
    dependents-first so push has to order them."""
    out: list[dict[str, Any]] = []
    for i in range(patients):
        pid = f"{run}-p{i}"
        out += [
            careplan(run, i, pid, f"{run}-g{i}"),
            observation(run, 2 * i, pid, 60 + i % 30 + 0.5),
            observation(run, 2 * i + 1, pid, 61 + i % 30),
            goal(run, i, pid),
            patient(run, i),
        ]
    return out


def remote_tagged(client: FhirClient, rtype: str, run: str) -> list[dict[str, Any]]:
    return client.search_all(rtype, [("_tag", f"{RUN_TAG}|{run}"), ("_count", "500")])


def comparable(resource: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in resource.items() if k != "meta"}
    out["tags"] = (resource.get("meta") or {}).get("tag")
    return out


def test_push_1000_resources_and_read_them_back_equal(local, hapi, run) -> None:
    resources = dataset(run, 210)  # 1,050 resources
    write_local(local, resources)
    report = push(local, hapi, batch_size=250)
    assert report.pushed == len(resources)
    assert report.bundles == 5
    assert status(local)["pending"] == 0
    for rtype in ("Patient", "Observation", "Goal", "CarePlan"):
        sent = {r["id"]: comparable(r) for r in resources if r["resourceType"] == rtype}
        got = {r["id"]: comparable(r) for r in remote_tagged(hapi, rtype, run)}
        assert got == sent, rtype
    # the remote versions were recorded; a second push sends nothing
    assert local.get_meta(f"sync.remote.Patient/{run}-p0") == "1"
    assert push(local, hapi).pushed == 0


def test_pull_changes_made_directly_in_hapi(local, hapi, run) -> None:
    where = [("_tag", f"{RUN_TAG}|{run}")]
    for i in range(30):
        hapi.update(patient(run, i))
    first = pull(local, hapi, types=["Patient"], where=where, count=7)
    assert first.created == 30 and first.pages >= 5
    assert local.read("Patient", f"{run}-p3")["name"][0]["family"] == "Test3"
    # changes in HAPI after the first pull: an update and a new patient
    changed = patient(run, 3)
    changed["name"][0]["family"] = "Renamed"
    hapi.update(changed)
    hapi.update(patient(run, 99))
    second = pull(local, hapi, types=["Patient"], where=where)
    assert (second.created, second.updated) == (1, 1)
    assert local.read("Patient", f"{run}-p3")["name"][0]["family"] == "Renamed"
    assert all(c.origin == "remote" for c in local.changes(0))
    assert push(local, hapi).pushed == 0  # pulled resources are not pushed back


def test_conflict_is_flagged_then_resolved(local, hapi, run) -> None:
    pid = f"{run}-p0"
    write_local(local, [patient(run, 0), observation(run, 0, pid, 70.0)])
    push(local, hapi)
    mine = observation(run, 0, pid, 71.0)
    write_local(local, [mine])  # local edit, not yet pushed
    theirs = observation(run, 0, pid, 75.0)
    hapi.update(theirs)  # concurrent edit in HAPI
    report = pull(local, hapi, types=["Observation"], where=[("_tag", f"{RUN_TAG}|{run}")])
    oid = f"Observation/{run}-o0"
    assert report.conflicts == [oid]
    assert local.read("Observation", f"{run}-o0")["valueQuantity"]["value"] == 71.0
    assert push(local, hapi).held == [oid]
    assert hapi.read("Observation", f"{run}-o0")["valueQuantity"]["value"] == 75.0
    resolve(local, hapi, "Observation", f"{run}-o0", keep="local")
    push(local, hapi)
    assert hapi.read("Observation", f"{run}-o0")["valueQuantity"]["value"] == 71.0
    assert status(local)["conflicts"] == {}


class TcpProxy:
    """A TCP proxy in front of HAPI that can go down (refusing and cutting connections)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and reset the open ones (as a crashed server would)."""
        with self._lock:
            if self._listener:
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
                self._listener.close()
                self._listener = None
            for s in self._conns:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RDWR)  # wakes the pipe threads blocked in recv()
                    s.close()
            self._conns.clear()

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()


def test_outage_mid_push_resumes_without_missing_or_duplicates(local, hapi_base_url, run) -> None:
    """HAPI becomes unreachable in the middle of a push (connections reset while a
    transaction is in flight, then refused); after it comes back the push resumes and HAPI
    holds every resource exactly once."""
    from urllib.parse import urlsplit

    target = urlsplit(hapi_base_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 80)
    proxy.start()
    base = f"http://127.0.0.1:{proxy.port}{target.path}"
    resources = dataset(run, 240)  # 1,200 resources
    write_local(local, resources)
    policy = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)
    cut = threading.Event()

    def on_progress(done: int, total: int) -> None:
        if done >= 300 and not cut.is_set():
            cut.set()
            # go down while the next transaction is being sent or processed
            threading.Timer(0.15, proxy.stop).start()

    try:
        with FhirClient(base, retry=policy) as client:
            with pytest.raises(RemoteUnavailable):
                push(local, client, batch_size=100, progress=on_progress)
            assert local.get_meta(PUSH_SEQ, 0) == 0
            assert status(local)["pending"] > 0
            proxy.start()  # back up
            report = push(local, client, batch_size=100)
            assert report.pushed > 0
            assert status(local)["pending"] == 0
            assert local.get_meta(PUSH_SEQ) == local.last_seq
    finally:
        proxy.stop()
    with FhirClient(hapi_base_url) as hapi:
        for rtype in ("Patient", "Observation", "Goal", "CarePlan"):
            expected = {f"{rtype}/{r['id']}" for r in resources if r["resourceType"] == rtype}
            found = Counter(
                ident["value"]
                for r in remote_tagged(hapi, rtype, run)
                for ident in r.get("identifier", [])
                if ident["system"] == IDENT
            )
            assert set(found) == expected, rtype
            assert max(found.values()) == 1, rtype


def test_remote_store_commit_search_and_meta(hapi, run) -> None:
    store = RemoteStore(hapi)
    p = patient(run, 0)
    o = observation(run, 0, p["id"], 80.0)
    created = store.commit(
        [
            WriteOp("create", "Patient", id=p["id"], resource=p, keep_id=True),
            WriteOp("create", "Observation", resource={k: v for k, v in o.items() if k != "id"}),
        ]
    )
    assert created[0].id == p["id"] and created[0].version_id == "1"
    new_id = created[1].id
    assert store.read("Observation", new_id)["valueQuantity"]["value"] == 80.0
    updated = store.commit(
        [WriteOp("update", "Patient", id=p["id"], resource={**p, "gender": "other"}, if_match="1")]
    )
    assert updated[0].version_id == "2"
    from fhircare.fhir.errors import PreconditionFailed

    with pytest.raises(PreconditionFailed):
        store.commit([WriteOp("update", "Patient", id=p["id"], resource=p, if_match="1")])
    found = store.search("Patient", [("_tag", f"{RUN_TAG}|{run}")])
    assert [r["id"] for r in found] == [p["id"]]
    store.commit([WriteOp("delete", "Observation", id=new_id)])
    assert not store.exists("Observation", new_id)
    assert store.current_version("Observation", new_id) == "2"
    key = f"test.{run}"
    store.set_meta(key, {"n": 1})
    assert store.get_meta(key) == {"n": 1}
    with pytest.raises(NotImplementedError):
        store.changes(0)
