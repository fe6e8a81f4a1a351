"""FHIR Bulk Data Access (IG v2) at the edge: the `$export` kick-offs (system, Patient,
Group/{id}), registered as operations so the CapabilityStatement lists them, and the
status (`GET`/`DELETE /fhir/bulk/{job}`) and file (`GET /fhir/bulk/{job}/{file}`) URLs.
Under `fhircare serve --workers N` the job runs in the worker that got the kick-off and any
worker answers its status, files and DELETE (the job's state is a file: `bulk_jobs`).

Under `FHIRCARE_AUTH=smart` every step needs a backend-services token with system-level
read and search scopes (`Access.bulk_types`); a job is polled and downloaded only by the
client that started it.

Each step leaves AuditEvents (type DICOM 110106 Export, `fhircare.security.audit`): one at
the kick-off, one per patient whose data the finished export holds, one per file download.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from fhircare.api.access import Access, get_access
from fhircare.api.http import ERROR_RESPONSES, FhirJSONResponse
from fhircare.api.operations import OpCall, Operation, OperationRegistry
from fhircare.api.workers import run_blocking
from fhircare.fhir.errors import BadRequest, Forbidden, outcome
from fhircare.population.bulk_jobs import Busy, ExportJob, ExportJobs, JobObserver
from fhircare.population.bulk_request import Level, parse_request, prefer_tokens
from fhircare.security.compartment import PATIENT_COMPARTMENT

if TYPE_CHECKING:
    from fhircare.bootstrap import Container

IG = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition"
NDJSON = "application/fhir+ndjson"
STATUS_PATH = "bulk"

router = APIRouter(prefix=f"/fhir/{STATUS_PATH}", tags=["Bulk Data"], responses=ERROR_RESPONSES)


def _values(call: OpCall) -> list[tuple[str, Any]]:
    """(name, value) of every parameter, from the query string and a Parameters body."""
    values: list[tuple[str, Any]] = list(call.query)
    body = call.body
    if body is None:
        return values
    if body.get("resourceType") != "Parameters":
        raise BadRequest("A POST $export takes a Parameters resource (or no body)")
    for p in body.get("parameter") or []:
        name = str(p.get("name", ""))
        given = [v for k, v in p.items() if k.startswith("value")]
        values.append((name, given[0] if given else p.get("resource")))
    return values


def status_url(base_url: str, job_id: str) -> str:
    """A job's status URL; its files are under it."""
    return f"{base_url}/{STATUS_PATH}/{job_id}"


@dataclass
class ExportAudit:
    """The audit trail of one export (a `JobObserver`): its kick-off, then one AuditEvent
    per patient whose data it holds (one with outcome 8 if it failed; outcome 4 when some
    types went into the error file)."""

    access: Access
    base_url: str

    def started(self, job: ExportJob) -> None:
        group = job.request.group_id
        self.access.audit_export(
            "kick-off",
            job_url=status_url(self.base_url, job.id),
            request_url=job.request.request_url,
            group_ref=f"Group/{group}" if group else None,
        )

    def finished(self, job: ExportJob, patients: set[str]) -> None:
        outcome, desc = "0", None
        if job.failure is not None:
            outcome, desc = "8", job.failure
        elif job.errors:
            outcome, desc = "4", "Some resource types could not be exported (see the error file)"
        self.access.audit_export(
            "complete",
            job_url=status_url(self.base_url, job.id),
            request_url=job.request.request_url,
            patients=[f"Patient/{pid}" for pid in patients],
            outcome_code=outcome,
            outcome_desc=desc,
        )


def kick_off(call: OpCall) -> Response:
    """$export: start an asynchronous export; 202 with the status URL in Content-Location."""
    prefer = prefer_tokens(call.headers.get("prefer"))
    if "respond-async" not in prefer:
        raise BadRequest(
            "$export is asynchronous: send the header Prefer: respond-async", code="required"
        )
    level: Level = (
        "group"
        if call.resource_type == "Group"
        else "patient"
        if call.resource_type == "Patient"
        else "system"
    )
    request = parse_request(
        level,
        _values(call),
        request_url=call.url,
        lenient="handling=lenient" in prefer,
        group_id=call.id,
        bases=(call.state.base_url,),
    )
    allowed = call.access.bulk_types()
    if allowed is not None:
        if request.types is None:
            kept = sorted(
                t
                for t in allowed
                if level == "system" or t == "Patient" or t in PATIENT_COMPARTMENT
            )
            if not kept:
                raise Forbidden("The token's system/ scopes grant no type this export holds")
            request = replace(request, types=tuple(kept))
        elif not set(request.types) <= allowed:
            missing = sorted(set(request.types) - allowed)
            raise Forbidden(f"The token's scopes do not cover {', '.join(missing)}")
    state = call.state
    if level == "group":
        call.svc.read("Group", call.id)  # 404/410 for an unknown Group (403: not the caller's)
    jobs: ExportJobs = state.exports
    observer: JobObserver = ExportAudit(call.access, state.base_url)
    try:
        job = jobs.start(
            request,
            owner=call.access.client,
            requires_token=state.settings.auth == "smart",
            observer=observer,
        )
    except Busy as exc:
        return FhirJSONResponse(
            exc.outcome(), status_code=429, headers={"Retry-After": str(exc.retry_after)}
        )
    return FhirJSONResponse(
        outcome("information", "informational", f"Export job {job.id} started"),
        status_code=202,
        headers={"Content-Location": status_url(state.base_url, job.id)},
    )


def _job(request: Request, access: Access, job_id: str) -> ExportJob:
    access.bulk_types()
    job = request.app.state.exports.get(job_id)
    if job.owner is not None and job.owner != access.client:
        raise Forbidden("This export job was started by another client")
    return job


@router.get("/{job_id}", summary="Bulk Data export status (202 running, 200 manifest)")
async def status(request: Request, job_id: str, access: Access = Depends(get_access)) -> Response:
    job = _job(request, access, job_id)
    jobs: ExportJobs = request.app.state.exports
    if job.state == "running":
        return Response(
            status_code=202,
            headers={"X-Progress": job.progress, "Retry-After": str(jobs.retry_after)},
        )
    if job.state == "failed":  # the IG's error answer: 5xx with an OperationOutcome
        return FhirJSONResponse(
            outcome("fatal", "exception", job.failure or "The export failed"), status_code=500
        )
    return JSONResponse(job.manifest(status_url(request.app.state.base_url, job.id)))


@router.delete("/{job_id}", summary="Cancel a Bulk Data export or delete its files")
async def delete(request: Request, job_id: str, access: Access = Depends(get_access)) -> Response:
    job = _job(request, access, job_id)
    await run_blocking(request.app.state.exports.delete, job.id)
    return FhirJSONResponse(
        outcome("information", "informational", f"Export job {job.id} deleted"), status_code=202
    )


@router.get("/{job_id}/{file_name}", summary="One ndjson file of a finished export")
async def download(
    request: Request, job_id: str, file_name: str, access: Access = Depends(get_access)
) -> Response:
    job = _job(request, access, job_id)
    path = request.app.state.exports.file_path(job, file_name)
    job_url = status_url(request.app.state.base_url, job.id)
    access.audit_export("download", job_url=job_url, file_url=f"{job_url}/{file_name}")
    return FileResponse(path, media_type=NDJSON)


def register(ops: OperationRegistry) -> None:
    common: dict[str, Any] = {"affects_state": False}
    ops.add(
        Operation(
            "export",
            kick_off,
            "system",
            definition=f"{IG}/export",
            description="Bulk Data export of the whole server",
            **common,
        )
    )
    ops.add(
        Operation(
            "export",
            kick_off,
            "type",
            ("Patient",),
            definition=f"{IG}/patient-export",
            description="Bulk Data export of every patient's compartment",
            **common,
        )
    )
    ops.add(
        Operation(
            "export",
            kick_off,
            "instance",
            ("Group",),
            definition=f"{IG}/group-export",
            description="Bulk Data export of a Group's members' compartments",
            **common,
        )
    )


def install(app: Any, container: Container) -> None:
    """The job manager of this app (files under FHIRCARE_DATA/bulk) and the status routes."""
    settings = container.settings
    jobs = ExportJobs(
        container.store,
        settings.bulk_dir or settings.data / "bulk",
        max_running=settings.bulk_max_jobs,
        max_lines=settings.bulk_file_lines,
        retention=settings.bulk_retention_hours * 3600.0,
        retry_after=settings.bulk_retry_after,
        bases=(container.base_url,),
    )
    container.closers.append(jobs.close)
    app.state.exports = jobs
    app.include_router(router)
