"""Export jobs shared by the processes that serve one folder (`serve --workers N`): two
ExportJobs on one folder stand for two workers. A job one runs is polled, downloaded and
cancelled through the other; a job whose runner has gone is reported failed, and removed
at the next start."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhircare.fhir.errors import NotFound
from fhircare.population.bulk_jobs import CANCELLED, MANIFEST, RUNNER_GONE, STALE, ExportJobs
from fhircare.population.bulk_request import ExportRequest
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore


class GatedStore(EmbeddedStore):
    """An export over it says it `reached` a type, then waits for `gate` before it reads
    it (so it is seen running)."""

    gate: threading.Event
    reached: threading.Event

    def iter_resources(self, resource_type: str):  # noqa: ANN201 - as EmbeddedStore
        self.reached.set()
        assert self.gate.wait(60)
        return super().iter_resources(resource_type)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GatedStore]:
    store = GatedStore(tmp_path / "s", fsync=False)
    store.gate, store.reached = threading.Event(), threading.Event()
    store.commit(
        [
            WriteOp("update", "Patient", id=pid, resource={"resourceType": "Patient"})
            for pid in ("a", "b")
        ]
    )
    yield store
    store.gate.set()
    store.close()


@pytest.fixture
def two(store: GatedStore, tmp_path: Path) -> Iterator[tuple[ExportJobs, ExportJobs]]:
    runner = ExportJobs(store, tmp_path / "bulk")
    other = ExportJobs(store, tmp_path / "bulk")
    yield runner, other
    store.gate.set()
    runner.close()
    other.close()


def _request() -> ExportRequest:
    return ExportRequest(level="system", request_url="http://x/fhir/$export", types=("Patient",))


def test_a_job_is_polled_and_downloaded_through_the_other(
    two: tuple[ExportJobs, ExportJobs], store: GatedStore
) -> None:
    runner, other = two
    job = runner.start(_request(), owner="client-1", requires_token=True)
    assert store.reached.wait(60)
    seen = other.get(job.id)
    assert seen.state == "running" and seen.owner == "client-1" and seen.requires_token
    assert seen.progress == "0% (0/1 types, Patient)"
    store.gate.set()
    assert runner.wait(job.id, 60)
    done = other.get(job.id)
    assert done.state == "done"
    assert done.manifest("u") == runner.get(job.id).manifest("u")
    [output] = done.outputs
    lines = other.file_path(done, output.name).read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == ["a", "b"]


def test_a_delete_through_the_other_cancels_the_running_job(
    two: tuple[ExportJobs, ExportJobs], store: GatedStore
) -> None:
    runner, other = two
    job = runner.start(_request(), owner=None, requires_token=False)
    other.delete(job.id)
    assert (job.directory / CANCELLED).exists()  # the runner's to stop and remove
    for jobs in (other, runner):
        with pytest.raises(NotFound):
            jobs.get(job.id)
    with pytest.raises(NotFound):
        other.delete(job.id)
    store.gate.set()
    assert runner.wait(job.id, 60)
    assert not job.directory.exists()


def test_a_delete_through_the_other_removes_a_finished_job(
    two: tuple[ExportJobs, ExportJobs], store: GatedStore
) -> None:
    runner, other = two
    store.gate.set()
    job = runner.start(_request(), owner=None, requires_token=False)
    assert runner.wait(job.id, 60)
    other.delete(job.id)
    assert not job.directory.exists()
    with pytest.raises(NotFound):
        runner.get(job.id)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("why", ["process gone", "heartbeat stale"])
def test_a_running_job_whose_runner_has_gone_is_failed(
    two: tuple[ExportJobs, ExportJobs], store: GatedStore, tmp_path: Path, why: str
) -> None:
    runner, other = two
    job = runner.start(_request(), owner=None, requires_token=False)
    record: dict[str, Any] = json.loads((job.directory / MANIFEST).read_text())
    assert record["state"] == "running" and record["heartbeat"] is not None
    if why == "process gone":  # the state file of a job whose worker died, just now
        record["pid"], record["heartbeat"] = _dead_pid(), time.time()
    else:  # a live process (this one) that has not renewed the file for too long
        record["heartbeat"] = time.time() - STALE - 1
    orphan = tmp_path / "bulk" / ("1" * 32)
    orphan.mkdir()
    (orphan / MANIFEST).write_text(json.dumps(record))
    failed = other.get(orphan.name)
    assert failed.state == "failed" and failed.failure == RUNNER_GONE
    assert other.get(job.id).state == "running"  # its runner renews it
    other.delete(orphan.name)  # nobody runs it: removed at once
    assert not orphan.exists()


def test_a_start_keeps_a_live_runners_job_and_removes_a_dead_ones(
    two: tuple[ExportJobs, ExportJobs], store: GatedStore, tmp_path: Path
) -> None:
    runner, _ = two
    live = runner.start(_request(), owner=None, requires_token=False)
    dead = tmp_path / "bulk" / ("0" * 32)
    dead.mkdir()
    record = json.loads((live.directory / MANIFEST).read_text())
    record["pid"] = _dead_pid()
    (dead / MANIFEST).write_text(json.dumps(record))
    late = ExportJobs(store, tmp_path / "bulk")  # a worker that starts after the first
    try:
        assert late.get(live.id).state == "running"
        assert live.directory.exists()
        assert not dead.exists()  # lost when the server stopped, as with one process
    finally:
        late.close()
