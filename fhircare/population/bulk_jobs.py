"""Bulk Data export jobs: started in the background, polled, downloaded, deleted.

Each job writes into its own directory (`<root>/<job id>/`); a thread of the process that
got the kick-off runs it (at most `max_running` at a time in one process: a kick-off beyond
that is refused as busy, 429). The job's state is a file next to its output (`job.json`,
replaced whole by write-and-rename): running (with its progress, the process id and host
of its runner and a heartbeat the runner renews every `HEARTBEAT` seconds), done (the
manifest) or failed (the reason). Every process serving the same folder (`fhircare serve
--workers N`) answers the status, the downloads and DELETE from that file; DELETE of a job
another process runs leaves a cancel marker (`cancelled`) that the runner sees within a
heartbeat, stops on and removes the directory.

A running job whose runner has gone (its process is not alive, or its heartbeat is older
than `STALE` seconds) is reported failed. Finished exports survive a restart; a job still
running when the server stops is lost (its directory is removed at the next start and its
status URL answers 404). Finished jobs are removed after `retention` seconds, and on
DELETE. A `JobObserver` given at the start hears when the job starts and when it has
finished (before its status URL shows the outcome): the edge records the export's
AuditEvents through it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
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
MANIFEST = "job.json"  # the job's state (running, done or failed), replaced whole
CANCELLED = "cancelled"  # DELETE's marker for the process that runs the job
HEARTBEAT = 1.0  # seconds between the runner's renewals of a running job's state file
STALE = 30.0  # a running job's state file not renewed for this long: its runner has gone
RUNNER_GONE = "The server process running this export stopped before it finished"
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
    pid: int | None = None  # the runner's process and host, and its last heartbeat
    host: str | None = None
    heartbeat: float | None = None

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
    """The export jobs under one folder, shared by every process that serves it."""

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
        self._jobs: dict[str, ExportJob] = {}  # the jobs this process runs, while they run
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # one write of this process's state files at a time
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="bulk")
        self._host = socket.gethostname()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._sweep(starting=True)

    # ---- lifecycle ----------------------------------------------------------------------

    def start(
        self,
        request: ExportRequest,
        *,
        owner: str | None,
        requires_token: bool,
        observer: JobObserver | None = None,
    ) -> ExportJob:
        """Queue a new job (Busy when `max_running` run in this process)."""
        self._sweep(starting=False)
        with self._lock:
            running = len(self._jobs)
            if running >= self.max_running:
                raise Busy(f"{running} exports are running; try again later", self.retry_after)
            job_id = secrets.token_hex(16)
            job = ExportJob(
                id=job_id,
                request=request,
                transaction_time=_instant(datetime.now(UTC)),
                owner=owner,
                requires_token=requires_token,
                directory=self.root / job_id,
                observer=observer,
                pid=os.getpid(),
                host=self._host,
            )
            self._jobs[job_id] = job
        # The directory appears whole, with its state file (the other processes never see
        # a job without one), and only once the kick-off is audited.
        scratch = self.root / f".new-{job_id}"
        try:
            scratch.mkdir(parents=True)
            self._save(job, scratch)
            if observer is not None:
                observer.started(job)  # not audited: not started either
            scratch.rename(job.directory)
        except BaseException:
            with self._lock:
                self._jobs.pop(job_id, None)
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        self._heartbeat()
        self._pool.submit(self._run, job)
        return job

    def get(self, job_id: str) -> ExportJob:
        """The job as this process runs it, or as its state file tells (NotFound for an
        unknown, deleted or cancelled one; a running one whose runner has gone: failed)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or self._cancelled(job):
            job = self._read(job_id)
        if job is None:
            raise NotFound(f"No export job {job_id[:40]!r} (finished and deleted, or unknown)")
        return job

    def delete(self, job_id: str) -> None:
        """Cancel a running job or remove a finished one with its files. A job another
        process runs gets the cancel marker: it answers 404 at once, and its runner stops
        and removes it within a heartbeat."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is not None:
            job.cancel.set()
            shutil.rmtree(job.directory, ignore_errors=True)
            return
        found = self._read(job_id)
        if found is None:
            raise NotFound(f"No export job {job_id[:40]!r}")
        if found.state == "running":  # alive in another process (else _read says failed)
            with contextlib.suppress(FileNotFoundError):  # finished and removed meanwhile
                (found.directory / CANCELLED).touch()
            return
        shutil.rmtree(found.directory, ignore_errors=True)

    def file_path(self, job: ExportJob, name: str) -> Path:
        """The path of one of the job's files (NotFound for any other name)."""
        names = {f.name for f in job.outputs + job.errors}
        if job.state != "done" or name not in names:
            raise NotFound(f"Export job {job.id} has no file {name[:60]!r}")
        return job.directory / name

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._beat is not None:
            self._beat.join()

    # ---- the worker ---------------------------------------------------------------------

    def wait(self, job_id: str, timeout: float | None = None) -> bool:
        """Block until the job this process runs has stopped running (True) or `timeout`
        passed (False); True at once for any other job."""
        with self._lock:
            job = self._jobs.get(job_id)
        return True if job is None else job.finished.wait(timeout)

    def _run(self, job: ExportJob) -> None:
        try:
            self._export(job)
        finally:
            with self._lock:
                self._jobs.pop(job.id, None)
            job.finished.set()

    def _export(self, job: ExportJob) -> None:
        def progress(done: int, total: int, current: str) -> None:
            pct = 100 * done // total if total else 100
            job.progress = f"{pct}% ({done}/{total} types" + (f", {current})" if current else ")")
            self._save(job)

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
            if self._cancelled(job):  # its directory went (or goes) with the DELETE
                shutil.rmtree(job.directory, ignore_errors=True)
                return
            log.warning("export %s failed (%s)", job.id, type(exc).__name__)
            job.failure = (
                exc.diagnostics
                if isinstance(exc, FhirError)
                else (f"The export failed: {type(exc).__name__}")
            )
            self._notify(job, set())
            job.state, job.finished_at = "failed", time.time()
            self._save(job)
            return
        if self._cancelled(job):
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

    def _heartbeat(self) -> None:
        """Start the thread that renews this process's running jobs' state files and looks
        for their cancel markers (once)."""
        with self._lock:
            if self._beat is not None or self._stop.is_set():
                return
            self._beat = threading.Thread(target=self._beating, name="bulk-heartbeat", daemon=True)
            self._beat.start()

    def _beating(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            with self._lock:
                jobs = list(self._jobs.values())
            for job in jobs:
                if not self._cancelled(job) and job.state == "running":
                    self._save(job)

    @staticmethod
    def _cancelled(job: ExportJob) -> bool:
        """Whether the job is cancelled: by a DELETE here, or in another process (its
        marker), which then stops it as if here."""
        if not job.cancel.is_set() and (job.directory / CANCELLED).exists():
            job.cancel.set()
        return job.cancel.is_set()

    # ---- the state files ----------------------------------------------------------------

    def _save(self, job: ExportJob, directory: Path | None = None) -> None:
        """Replace the job's state file (write, then rename over it); nothing once it is
        cancelled (its directory is gone or going)."""
        with self._writing:
            if job.cancel.is_set():
                return
            if job.state == "running":
                job.heartbeat = time.time()
            record = {
                "state": job.state,
                "progress": job.progress,
                "failure": job.failure,
                "pid": job.pid,
                "host": job.host,
                "heartbeat": job.heartbeat,
                "request": {**asdict(job.request), "since": None},
                "since": job.request.since.isoformat() if job.request.since else None,
                "transaction_time": job.transaction_time,
                "owner": job.owner,
                "requires_token": job.requires_token,
                "outputs": [asdict(f) for f in job.outputs],
                "errors": [asdict(f) for f in job.errors],
                "finished_at": job.finished_at,
            }
            where = directory or job.directory
            tmp = where / f"{MANIFEST}.{os.getpid()}.tmp"
            try:
                tmp.write_text(json.dumps(record))
                tmp.replace(where / MANIFEST)
            except FileNotFoundError:  # deleted meanwhile
                pass

    def _read(self, job_id: str) -> ExportJob | None:
        """The job as its state file tells; None when there is none (or it is cancelled)."""
        if not (len(job_id) == 32 and set(job_id) <= _JOB_ID):
            return None
        directory = self.root / job_id
        if (directory / CANCELLED).exists():
            return None
        try:
            job = self._parse(directory, json.loads((directory / MANIFEST).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if job.state == "running" and not self._alive(job):
            job.state, job.failure = "failed", RUNNER_GONE
            job.finished_at = job.heartbeat
        return job

    def _alive(self, job: ExportJob) -> bool:
        """Whether the runner of a job its state file says is running is still at it."""
        if job.heartbeat is None or time.time() - job.heartbeat > STALE:
            return False
        if job.host != self._host or job.pid is None:
            return True  # another machine's process: the heartbeat alone tells
        try:
            os.kill(job.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            return True
        return True

    @staticmethod
    def _parse(directory: Path, record: dict[str, Any]) -> ExportJob:
        req = record["request"]
        since = record["since"]
        request = ExportRequest(
            **{
                **req,
                "types": tuple(req["types"]) if req["types"] else None,
                "ignored": tuple(req["ignored"]),
                "patients": tuple(req["patients"]) if req.get("patients") is not None else None,
                "since": datetime.fromisoformat(since) if since else None,
            }
        )
        state = record.get("state", "done")  # a manifest saved before job states were
        job = ExportJob(
            id=directory.name,
            request=request,
            transaction_time=record["transaction_time"],
            owner=record["owner"],
            requires_token=record["requires_token"],
            directory=directory,
            state=state,
            progress=record.get("progress", "100%"),
            outputs=[OutputFile(**f) for f in record["outputs"]],
            errors=[OutputFile(**f) for f in record["errors"]],
            failure=record.get("failure"),
            finished_at=record["finished_at"],
            pid=record.get("pid"),
            host=record.get("host"),
            heartbeat=record.get("heartbeat"),
        )
        if state != "running":
            job.finished.set()
        return job

    def _sweep(self, *, starting: bool) -> None:
        """Remove the directories of jobs past `retention`, of deleted ones no process runs
        and, at the start, of jobs whose runner has gone (lost, as documented) and of
        anything unreadable."""
        if not self.root.is_dir():
            return
        now = time.time()
        for directory in self.root.iterdir():
            name = directory.name
            if name.startswith(".new-"):  # a kick-off in progress, or one that crashed
                try:
                    old = now - directory.stat().st_mtime > STALE
                except OSError:
                    continue
                if old:
                    shutil.rmtree(directory, ignore_errors=True)
                continue
            if not (directory.is_dir() and set(name) <= _JOB_ID):
                continue
            with self._lock:
                if name in self._jobs:
                    continue
            try:
                job = self._parse(directory, json.loads((directory / MANIFEST).read_text()))
            except FileNotFoundError:
                if not directory.exists():
                    continue
                job = None
            except (OSError, ValueError, KeyError, TypeError):
                job = None
            if job is None:
                if starting:  # unreadable (or older than job states)
                    shutil.rmtree(directory, ignore_errors=True)
                continue
            running = job.state == "running" and self._alive(job)
            if running:
                continue
            gone = job.state == "running"  # its runner stopped
            ended = job.finished_at if job.finished_at is not None else job.heartbeat or 0.0
            if (
                (gone and starting)
                or (directory / CANCELLED).exists()
                or now - ended > self.retention
            ):
                shutil.rmtree(directory, ignore_errors=True)
