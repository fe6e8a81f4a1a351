"""Bulk Data export jobs: started in the background, polled, downloaded, deleted.

Each job writes into its own directory (`<root>/<job id>/`); a worker thread runs it (at
most `max_running` at a time: a kick-off beyond that is refused as busy, 429). A finished
job's manifest is saved next to its files (`job.json`), so finished exports survive a
restart; a job still running when the server stops is lost (its directory is removed at
the next start and its status URL answers 404). Finished jobs are removed after
`retention` seconds, and on DELETE. A `JobObserver` given at the start hears when the job
starts and when it has finished (before its status URL shows the outcome): the edge
records the export's AuditEvents through it.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from fhircare.fhir.errors import FhirError, NotFound
from fhircare.population.bulk_export import Cancelled, OutputFile, write_export
from fhircare.population.bulk_request import ExportRequest
from fhircare.store.base import Store

log = logging.getLogger("fhircare.bulk")

State = Literal["running", "done", "failed"]
MANIFEST = "job.json"
_JOB_ID = frozenset("0123456789abcdef")


class Busy(FhirError):
    """Too many exports are running; retry after `retry_after` seconds (429)."""

    status = 429
    code = "throttled"

    def __init__(self, diagnostics: str, retry_after: int) -> None:
        super().__init__(diagnostics)
        self.retry_after = retry_after


@dataclass
class ExportJob:
    id: str
    request: ExportRequest
    transaction_time: str
    owner: str | None
    requires_token: bool
    directory: Path
    state: State = "running"
    progress: str = "queued"
    outputs: list[OutputFile] = field(default_factory=list)
    errors: list[OutputFile] = field(default_factory=list)
    failure: str | None = None
    finished_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)  # done, failed or gone
    observer: JobObserver | None = None

    def manifest(self, file_url: str) -> dict[str, Any]:
        """The completion manifest; `file_url` is the URL prefix of this job's files."""
        body: dict[str, Any] = {
            "transactionTime": self.transaction_time,
            "request": self.request.request_url,
            "requiresAccessToken": self.requires_token,
            "output": [
                {"type": f.type, "url": f"{file_url}/{f.name}", "count": f.count}
                for f in self.outputs
            ],
            "error": [
                {"type": f.type, "url": f"{file_url}/{f.name}", "count": f.count}
                for f in self.errors
            ],
        }
        if self.request.ignored:
            body["extension"] = {"ignoredParameters": list(self.request.ignored)}
        return body


class JobObserver(Protocol):
    """Told about one job: `started` before it runs; `finished` once it has written its
    files, with the ids of the patients whose data they hold (or once it failed:
    `job.failure`, no patients), before its status URL shows that."""

    def started(self, job: ExportJob) -> None: ...

    def finished(self, job: ExportJob, patients: set[str]) -> None: ...


def _instant(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ExportJobs:
    """The export jobs of one server."""

    def __init__(
        self,
        store: Store,
        root: Path,
        *,
        max_running: int = 2,
        max_lines: int = 50_000,
        retention: float = 24 * 3600.0,
        retry_after: int = 2,
        bases: Sequence[str] = (),
    ) -> None:
        self.store = store
        self.root = root
        self.max_lines = max_lines
        self.retention = retention
        self.retry_after = retry_after
        self.bases = tuple(bases)
        self.max_running = max_running
        self._jobs: dict[str, ExportJob] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="bulk")
        self._load()

    # ---- lifecycle ----------------------------------------------------------------------

    def start(
        self,
        request: ExportRequest,
        *,
        owner: str | None,
        requires_token: bool,
        observer: JobObserver | None = None,
    ) -> ExportJob:
        """Queue a new job (Busy when `max_running` are running)."""
        self._expire()
        with self._lock:
            running = sum(1 for j in self._jobs.values() if j.state == "running")
            if running >= self.max_running:
                raise Busy(f"{running} exports are running; try again later", self.retry_after)
            job_id = secrets.token_hex(16)
            directory = self.root / job_id
            directory.mkdir(parents=True)
            job = ExportJob(
                id=job_id,
                request=request,
                transaction_time=_instant(datetime.now(UTC)),
                owner=owner,
                requires_token=requires_token,
                directory=directory,
                observer=observer,
            )
            self._jobs[job_id] = job
        if observer is not None:
            try:
                observer.started(job)
            except BaseException:  # not audited: not started either
                with self._lock:
                    self._jobs.pop(job_id, None)
                shutil.rmtree(directory, ignore_errors=True)
                raise
        self._pool.submit(self._run, job)
        return job

    def get(self, job_id: str) -> ExportJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"No export job {job_id[:40]!r} (finished and deleted, or unknown)")
        return job

    def delete(self, job_id: str) -> None:
        """Cancel a running job or remove a finished one with its files."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is None:
            raise NotFound(f"No export job {job_id[:40]!r}")
        job.cancel.set()
        shutil.rmtree(job.directory, ignore_errors=True)

    def file_path(self, job: ExportJob, name: str) -> Path:
        """The path of one of the job's files (NotFound for any other name)."""
        names = {f.name for f in job.outputs + job.errors}
        if job.state != "done" or name not in names:
            raise NotFound(f"Export job {job.id} has no file {name[:60]!r}")
        return job.directory / name

    def close(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ---- the worker ---------------------------------------------------------------------

    def wait(self, job_id: str, timeout: float | None = None) -> bool:
        """Block until the job has stopped running (True) or `timeout` passed (False)."""
        with self._lock:
            job = self._jobs.get(job_id)
        return True if job is None else job.finished.wait(timeout)

    def _run(self, job: ExportJob) -> None:
        try:
            self._export(job)
        finally:
            job.finished.set()

    def _export(self, job: ExportJob) -> None:
        def progress(done: int, total: int, current: str) -> None:
            pct = 100 * done // total if total else 100
            job.progress = f"{pct}% ({done}/{total} types" + (f", {current})" if current else ")")

        try:
            result = write_export(
                self.store,
                job.request,
                job.directory,
                max_lines=self.max_lines,
                cancel=job.cancel,
                progress=progress,
                bases=self.bases,
            )
        except Cancelled:
            shutil.rmtree(job.directory, ignore_errors=True)
            return
        except Exception as exc:  # reported through the status URL as the IG's error answer
            log.warning("export %s failed (%s)", job.id, type(exc).__name__)
            job.failure = (
                exc.diagnostics
                if isinstance(exc, FhirError)
                else (f"The export failed: {type(exc).__name__}")
            )
            self._notify(job, set())
            job.state, job.finished_at = "failed", time.time()
            return
        if job.cancel.is_set():
            shutil.rmtree(job.directory, ignore_errors=True)
            return
        job.outputs, job.errors = result.outputs, result.errors
        job.finished_at = time.time()
        self._notify(job, result.patients)
        job.state = "done"
        self._save(job)

    def _notify(self, job: ExportJob, patients: set[str]) -> None:
        observer, job.observer = job.observer, None
        if observer is None:
            return
        try:
            observer.finished(job, patients)
        except Exception:  # the audit trail must not fail the export; no patient data logged
            log.exception("export %s: the observer failed", job.id)

    # ---- durability of finished jobs ----------------------------------------------------

    def _save(self, job: ExportJob) -> None:
        record = {
            "request": {**asdict(job.request), "since": None},
            "since": job.request.since.isoformat() if job.request.since else None,
            "transaction_time": job.transaction_time,
            "owner": job.owner,
            "requires_token": job.requires_token,
            "outputs": [asdict(f) for f in job.outputs],
            "errors": [asdict(f) for f in job.errors],
            "finished_at": job.finished_at,
        }
        tmp = job.directory / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(job.directory / MANIFEST)

    def _load(self) -> None:
        if not self.root.is_dir():
            return
        for directory in self.root.iterdir():
            if not (directory.is_dir() and set(directory.name) <= _JOB_ID):
                continue
            try:
                record = json.loads((directory / MANIFEST).read_text())
                req = record["request"]
                since = record["since"]
                request = ExportRequest(
                    **{
                        **req,
                        "types": tuple(req["types"]) if req["types"] else None,
                        "ignored": tuple(req["ignored"]),
                        "since": datetime.fromisoformat(since) if since else None,
                    }
                )
                job = ExportJob(
                    id=directory.name,
                    request=request,
                    transaction_time=record["transaction_time"],
                    owner=record["owner"],
                    requires_token=record["requires_token"],
                    directory=directory,
                    state="done",
                    progress="100%",
                    outputs=[OutputFile(**f) for f in record["outputs"]],
                    errors=[OutputFile(**f) for f in record["errors"]],
                    finished_at=record["finished_at"],
                )
                job.finished.set()
            except (OSError, ValueError, KeyError, TypeError):
                # unfinished when the server stopped (or unreadable): lost, as documented
                shutil.rmtree(directory, ignore_errors=True)
                continue
            self._jobs[job.id] = job

    def _expire(self) -> None:
        now = time.time()
        with self._lock:
            old = [
                j
                for j in self._jobs.values()
                if j.finished_at is not None and now - j.finished_at > self.retention
            ]
            for job in old:
                del self._jobs[job.id]
        for job in old:
            shutil.rmtree(job.directory, ignore_errors=True)
