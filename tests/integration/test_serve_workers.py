"""`fhircare serve --workers 2` as real processes on loopback: one socket, one store, every
write read back through either worker, nothing lost to a SIGKILL of the whole group;
`/metrics` and Bulk `$export` answered alike by either worker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, wait_http

FHIR = {"Content-Type": "application/fhir+json"}
WORKER = "x-fhircare-worker"
ATTEMPTS = 200  # requests on fresh connections before giving up on seeing both workers


class Group:
    """`fhircare serve --workers 2` in its own session (so it can be killed whole)."""

    def __init__(self, data: Path, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.log = data.parent / f"serve-{self.port}.log"
        env = {**os.environ, "FHIRCARE_WORKERS": "2", **(env or {})}
        data.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fhircare", "serve", "--port", str(self.port)]
                + ["--data", str(data)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        wait_http(f"{self.base}/metadata", 60, self.proc)
        seen = set()
        for _ in range(ATTEMPTS):  # both workers up: each answers on some fresh connection
            seen.add(httpx.get(f"http://127.0.0.1:{self.port}/health").json()["worker"])
            if seen == {0, 1}:
                break
        assert seen == {0, 1}

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def kill_group(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Group]]:
    groups: list[Group] = []
    yield groups
    for group in groups:  # the whole session, workers outliving their parent included
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group.proc.pid, signal.SIGKILL)
        group.proc.wait(30)


def _create(base: str, family: str) -> tuple[str, str]:
    body = {"resourceType": "Patient", "name": [{"family": family}], "gender": "female"}
    r = httpx.post(f"{base}/Patient", json=body, headers=FHIR)  # a fresh connection each
    assert r.status_code == 201, r.text
    return r.json()["id"], r.headers[WORKER]


def test_writes_through_either_worker_are_read_back_through_either(
    tmp_path: Path, started: list[Group]
) -> None:
    group = Group(tmp_path / "data")
    started.append(group)
    created: dict[str, str] = {}
    for n in range(ATTEMPTS):
        pid, worker = _create(group.base, "Shared")
        created[pid] = worker
        if n >= 30 and set(created.values()) == {"0", "1"}:
            break
    assert set(created.values()) == {"0", "1"}  # both workers took creates
    readers = set()
    for pid in created:
        r = httpx.get(f"{group.base}/Patient/{pid}")
        assert r.status_code == 200 and r.json()["id"] == pid
        readers.add(r.headers[WORKER])
    searched = set()
    for _ in range(ATTEMPTS):
        r = httpx.get(f"{group.base}/Patient", params={"family": "Shared", "_count": "500"})
        assert r.status_code == 200
        assert sorted(e["resource"]["id"] for e in r.json()["entry"]) == sorted(created)
        searched.add(r.headers[WORKER])
        if searched == {"0", "1"}:
            break
    assert searched == {"0", "1"}

    # a SearchParameter created through one worker is honoured by both
    sp = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/SearchParameter/sex",
        "name": "sex",
        "description": "Administrative gender",
        "status": "active",
        "code": "sex",
        "base": ["Patient"],
        "type": "token",
        "expression": "Patient.gender",
    }
    assert httpx.post(f"{group.base}/SearchParameter", json=sp, headers=FHIR).status_code == 201
    honoured = set()
    for _ in range(ATTEMPTS):
        r = httpx.get(f"{group.base}/Patient", params={"sex": "female", "_count": "500"})
        assert r.status_code == 200, r.text
        assert len(r.json()["entry"]) == len(created)
        honoured.add(r.headers[WORKER])
        if honoured == {"0", "1"}:
            break
    assert honoured == {"0", "1"}

    # a second server on the folder is refused while the group holds it
    second = subprocess.run(
        [sys.executable, "-m", "fhircare", "serve", "--port", str(free_port())]
        + ["--data", str(group.data), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2
    assert "in use by another fhircare process" in second.stderr
    assert group.stop() == 0
    # both workers compacted at their stop, the second after the first: a restart reads all
    assert (group.data / "journal.log").stat().st_size == 0
    again = Group(group.data)
    started.append(again)
    r = httpx.get(f"{again.base}/Patient", params={"sex": "female", "_count": "500"})
    assert sorted(e["resource"]["id"] for e in r.json()["entry"]) == sorted(created)


def test_a_sigkill_of_the_group_loses_no_acknowledged_write(
    tmp_path: Path, started: list[Group]
) -> None:
    group = Group(tmp_path / "data")
    started.append(group)
    acknowledged = dict(_create(group.base, "Durable") for _ in range(40))
    assert set(acknowledged.values()) == {"0", "1"} or len(acknowledged) == 40
    group.kill_group()
    again = Group(group.data)
    started.append(again)
    for pid in acknowledged:
        assert httpx.get(f"{again.base}/Patient/{pid}").status_code == 200


def test_workers_stop_when_the_parent_is_killed_alone(tmp_path: Path, started: list[Group]) -> None:
    """SIGKILL of the parent only: its workers stop (no orphan serving or holding the
    folder), and a new server opens the folder with every acknowledged write."""
    group = Group(tmp_path / "data")
    started.append(group)
    acknowledged = dict(_create(group.base, "Orphan") for _ in range(10))
    workers = _children(group.proc.pid)
    assert len(workers) == 2
    os.kill(group.proc.pid, signal.SIGKILL)
    group.proc.wait(30)
    for pid in workers:
        _wait_gone(pid)
    again = Group(group.data)
    started.append(again)
    for pid in acknowledged:
        assert httpx.get(f"{again.base}/Patient/{pid}").status_code == 200


def _children(parent: int) -> list[int]:
    """The pids of `parent`'s child processes (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def _wait_gone(pid: int, timeout: float = 30) -> None:
    """Wait until process `pid` has exited (a zombie counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} still runs {timeout} s after its parent was killed")


def test_the_leader_alone_listens_for_mllp(tmp_path: Path, started: list[Group]) -> None:
    mllp_port = free_port()
    group = Group(tmp_path / "data", {"FHIRCARE_MLLP_PORT": str(mllp_port)})
    started.append(group)
    with socket.create_connection(("127.0.0.1", mllp_port), timeout=10):
        pass  # someone listens
    assert group.text().count("MLLP listening") == 1
    assert group.stop() == 0


def test_what_several_workers_cannot_share_is_refused(tmp_path: Path) -> None:
    env: dict[str, Any] = {**os.environ, "FHIRCARE_WORKERS": "2", "FHIRCARE_SERVER": "granian"}
    out = subprocess.run(
        [sys.executable, "-m", "fhircare", "serve", "--data", str(tmp_path / "d")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "FHIRCARE_WORKERS=2 needs FHIRCARE_SERVER=uvicorn" in out.stderr


def _counted(text: str, route: str, method: str = "GET", status: str = "200") -> float:
    """The value of fhircare_http_requests_total for one route in an exposition text (0 if
    absent)."""
    wanted = f'fhircare_http_requests_total{{method="{method}",route="{route}",status="{status}"}}'
    found = [line for line in text.splitlines() if line.startswith(wanted + " ")]
    assert len(found) <= 1, found  # merged: one series, no per-worker copies
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def test_metrics_count_what_every_worker_answered(tmp_path: Path, started: list[Group]) -> None:
    group = Group(tmp_path / "data")
    started.append(group)
    pid, _ = _create(group.base, "Counted")
    answered: dict[str, int] = {}
    for n in range(ATTEMPTS):  # reads on fresh connections until both workers took some
        r = httpx.get(f"{group.base}/Patient/{pid}")
        assert r.status_code == 200
        answered[r.headers[WORKER]] = answered.get(r.headers[WORKER], 0) + 1
        if n >= 10 and set(answered) == {"0", "1"}:
            break
    assert set(answered) == {"0", "1"}
    reads = sum(answered.values())
    scraped = set()
    for _ in range(ATTEMPTS):  # every worker's scrape tells all the reads, once each
        r = httpx.get(f"http://127.0.0.1:{group.port}/metrics")
        assert r.status_code == 200, r.text
        assert _counted(r.text, "/fhir/{resource_type}/{resource_id}") == reads
        assert _counted(r.text, "/fhir/{resource_type}", "POST", "201") == 1
        assert "fhircare_http_request_duration_seconds_count" in r.text
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        for name in (
            "fhircare_sync_outbox_depth",
            "fhircare_sync_held",
            "fhircare_sync_lag_seconds",
        ):
            # a sample, as one process has (not HELP and TYPE alone), and only one
            assert [s.value for s in families[name].samples] == [0.0], name
        scraped.add(r.headers[WORKER])
        if scraped == {"0", "1"}:
            break
    assert scraped == {"0", "1"}
    assert group.stop() == 0
    # a restart starts the group's counts afresh: what the last group counted is not added
    again = Group(group.data)
    started.append(again)
    r = httpx.get(f"http://127.0.0.1:{again.port}/metrics")
    assert _counted(r.text, "/fhir/{resource_type}/{resource_id}") == 0


ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def _kick_off(group: Group) -> tuple[str, str]:
    """A `Patient` $export; its status URL and the worker that took the kick-off."""
    r = httpx.get(f"{group.base}/$export", params={"_type": "Patient"}, headers=ASYNC)
    assert r.status_code == 202, r.text
    return r.headers["content-location"], r.headers[WORKER]


def test_an_export_is_answered_by_every_worker(tmp_path: Path, started: list[Group]) -> None:
    """Kicked off at one worker, its status, manifest, files and DELETE answered at the
    other: the job's state is in the data folder, not in the worker running it."""
    group = Group(tmp_path / "data", {"FHIRCARE_BULK_MAX_JOBS": "16"})
    started.append(group)
    ids = {_create(group.base, "Exported")[0] for _ in range(5)}
    url, runner = _kick_off(group)
    manifests: dict[str, Any] = {}
    for _ in range(ATTEMPTS):  # polled until each worker has answered with the manifest
        r = httpx.get(url)
        assert r.status_code in (200, 202), r.text
        if r.status_code == 200:
            manifests[r.headers[WORKER]] = r.json()
        if set(manifests) == {"0", "1"}:
            break
    assert set(manifests) == {"0", "1"}
    assert manifests["0"] == manifests["1"]
    [output] = manifests["0"]["output"]
    assert output["type"] == "Patient" and output["count"] == len(ids)
    served: dict[str, set[str]] = {}
    for _ in range(ATTEMPTS):  # each worker serves the file the runner wrote
        r = httpx.get(output["url"])
        assert r.status_code == 200, r.text
        served[r.headers[WORKER]] = {json.loads(line)["id"] for line in r.text.splitlines()}
        if set(served) == {"0", "1"}:
            break
    assert served == {"0": ids, "1": ids}

    # DELETE at the worker that did not run the job; then no worker knows it
    for _ in range(ATTEMPTS):
        url, runner = _kick_off(group)
        r = httpx.delete(url)
        assert r.status_code == 202, r.text
        if r.headers[WORKER] != runner:
            break
    assert r.headers[WORKER] != runner
    gone = set()
    for _ in range(ATTEMPTS):
        r = httpx.get(url)
        assert r.status_code == 404, r.text
        gone.add(r.headers[WORKER])
        if gone == {"0", "1"}:
            break
    assert gone == {"0", "1"}
