"""Operator endpoints: `/health` (alive), `/ready` (can serve), `/metrics` (Prometheus) and
`/sync/status` (the outbox, for `fhircare sync status` while `serve` runs).

`/health`, `/ready` and `/metrics` need no token even under SMART: orchestrators and
Prometheus scrape them without credentials, and they carry no patient data (counts, route
templates, status and ACK codes). `/sync/status` names conflicting resources, so under
SMART it needs a user/ or system/ scope.

Under `fhircare serve --workers N` any worker answers `/metrics` with every worker's figures
merged (`fhircare.observability.metrics`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from fhircare.api.access import Access, get_access
from fhircare.observability import metrics

router = APIRouter(tags=["Operations"])

HAPI_PROBE_TIMEOUT = 3.0


@router.get("/health", summary="Liveness: the process answers")
async def health(request: Request) -> JSONResponse:
    settings = request.app.state.settings
    if settings.workers > 1:  # which of the worker processes answered
        return JSONResponse({"status": "ok", "worker": settings.worker_index})
    return JSONResponse({"status": "ok"})


@router.get(
    "/ready",
    summary="Readiness: the store is open and HAPI (when configured) answers",
    responses={503: {"description": "Not ready: see `checks`"}},
)
async def ready(request: Request) -> JSONResponse:
    st = request.app.state
    checks: dict[str, str] = {"store": await asyncio.to_thread(_store_check, st.store)}
    settings = st.settings
    if settings.hapi_url:
        checks["hapi"] = await _hapi_check(settings.hapi_url)
    if settings.mllp_port:
        checks["mllp"] = "listening" if getattr(st, "mllp_server", None) else "not listening"
    subscription = getattr(st, "subscription", None)
    if subscription is not None:
        checks["subscription"] = subscription  # informational: the sync pull covers a gap
    failed = [k for k, v in checks.items() if k != "subscription" and v not in ("ok", "listening")]
    body = {"status": "not ready" if failed else "ready", "checks": checks}
    return JSONResponse(body, status_code=503 if failed else 200)


def _store_check(store: Any) -> str:
    try:
        store.get_meta("fhircare.ready-probe")
    except Exception as exc:  # a closed or broken store
        return f"error ({type(exc).__name__})"
    return "ok"


async def _hapi_check(base: str) -> str:
    try:
        async with httpx.AsyncClient(timeout=HAPI_PROBE_TIMEOUT) as client:
            response = await client.get(
                f"{base.rstrip('/')}/metadata",
                params={"_summary": "true"},
                headers={"Accept": "application/fhir+json"},
            )
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok" if response.status_code == 200 else f"answered {response.status_code}"


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics_endpoint(request: Request) -> Response:
    container = request.app.state.container
    if _syncs(container.settings):
        await asyncio.to_thread(_sync_gauges, container.store)
    else:  # nothing to push: 0, also with several workers (where a gauge never set is absent)
        metrics.sync_idle()
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


def _syncs(settings: Any) -> bool:
    return bool(settings.hapi_url) and settings.store == "embedded"


def _sync_gauges(store: Any) -> None:
    from fhircare.fhir.datetimes import parse_datetime
    from fhircare.remote.sync import pending_changes

    todo, held, *_ = pending_changes(store)
    metrics.SYNC_OUTBOX.set(len(todo))
    metrics.SYNC_HELD.set(len(held))
    stamps = [parse_datetime(c.last_updated).timestamp() for c in todo if c.last_updated]
    metrics.SYNC_LAG.set(max(0.0, time.time() - min(stamps)) if stamps else 0.0)


@router.get("/sync/status", summary="Sync outbox, watermarks and open conflicts")
async def sync_status(request: Request, access: Access = Depends(get_access)) -> JSONResponse:
    from fhircare.remote.sync import status

    access.require_system("The sync status")
    return JSONResponse(await asyncio.to_thread(status, request.app.state.store))
