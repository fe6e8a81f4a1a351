"""ExportJobs and its JobObserver (the hook the audit trail uses): told at the start and at
the finish with the patients exported; an observer that fails at the start leaves no job
behind, one that fails at the finish does not fail the export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fhircare.population.bulk_jobs import ExportJob, ExportJobs
from fhircare.population.bulk_request import ExportRequest
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore


class Recorder:
    def __init__(self, fail_at: str | None = None) -> None:
        self.fail_at = fail_at
        self.seen: list[tuple[str, str, str | None, set[str]]] = []

    def started(self, job: ExportJob) -> None:
        if self.fail_at == "start":
            raise RuntimeError("audit down")
        self.seen.append(("started", job.state, job.failure, set()))

    def finished(self, job: ExportJob, patients: set[str]) -> None:
        self.seen.append(("finished", job.state, job.failure, patients))
        if self.fail_at == "finish":
            raise RuntimeError("audit down")


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[ExportJobs]:
    store = EmbeddedStore(tmp_path / "s", fsync=False)
    store.commit(
        [
            WriteOp("update", "Patient", id="a", resource={"resourceType": "Patient"}),
            WriteOp("update", "Patient", id="b", resource={"resourceType": "Patient"}),
            WriteOp(
                "update",
                "Observation",
                id="o",
                resource={
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": "Patient/a"},
                    "performer": [{"reference": "Patient/c"}],  # c's data too (compartment)
                },
            ),
        ]
    )
    manager = ExportJobs(store, tmp_path / "bulk", max_running=1)
    yield manager
    manager.close()
    store.close()


def _request(*types: str) -> ExportRequest:
    return ExportRequest(level="system", request_url="http://x/fhir/$export", types=types)


def test_observer_hears_the_start_and_the_patients_before_the_job_is_done(
    jobs: ExportJobs,
) -> None:
    observer = Recorder()
    job = jobs.start(_request("Observation"), owner=None, requires_token=False, observer=observer)
    assert jobs.wait(job.id, 30)
    assert observer.seen == [
        ("started", "running", None, set()),
        ("finished", "running", None, {"a", "c"}),  # told before the status shows "done"
    ]
    assert jobs.get(job.id).state == "done"


def test_an_observer_failing_at_the_start_leaves_no_job(jobs: ExportJobs, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        jobs.start(
            _request("Patient"), owner=None, requires_token=False, observer=Recorder("start")
        )
    assert not list((tmp_path / "bulk").iterdir())
    job = jobs.start(_request("Patient"), owner=None, requires_token=False)  # not busy
    assert jobs.wait(job.id, 30) and jobs.get(job.id).state == "done"


def test_an_observer_failing_at_the_finish_does_not_fail_the_export(jobs: ExportJobs) -> None:
    observer = Recorder("finish")
    job = jobs.start(_request("Patient"), owner=None, requires_token=False, observer=observer)
    assert jobs.wait(job.id, 30)
    assert jobs.get(job.id).state == "done"
    assert observer.seen[-1] == ("finished", "running", None, {"a", "b"})
