"""Per-request access control and audit for the API edge.

`get_access` gives each request an `Access`. With `FHIRCARE_AUTH=none` (local use only)
it allows everything; with `FHIRCARE_AUTH=smart` it holds the verified bearer token's
context and enforces SMART scopes and the patient compartment (fhircare.security).
Either way, reads and writes of patient data are recorded as AuditEvents.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from fhircare.fhir.errors import Forbidden
from fhircare.security.context import AuthContext, SearchGuard, allowed, authorize, search_guard

INTERACTION = {"search": "search-type"}
METHOD_INTERACTION = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}


class Access:
    """Allow-all access (FHIRCARE_AUTH=none); `SmartAccess` enforces scopes."""

    def __init__(self, ctx: AuthContext | None = None, recorder: Any = None) -> None:
        self.ctx = ctx or AuthContext.unrestricted()
        self.recorder = recorder

    @property
    def patient(self) -> str | None:
        return self.ctx.patient

    def require(self, resource_type: str, interaction: str, resource: Any = None) -> None:
        """Raise Forbidden unless the interaction is allowed on the type (and resource)."""

    def require_system(self, what: str) -> None:
        """Raise Forbidden unless the caller may act across patients (user/ or system/)."""

    def search_restriction(self, resource_type: str) -> list[tuple[str, str]]:
        """Extra search parameters that confine a search to what the caller may see."""
        return []

    def bulk_types(self) -> frozenset[str] | None:
        """The types a Bulk Data export may hold for this caller (None: every type);
        Forbidden unless the caller may export at all."""
        return None

    @property
    def client(self) -> str | None:
        """The client the token was issued to (None without SMART)."""
        return None

    def filter_bundle(self, bundle: dict[str, Any]) -> None:
        """Drop entries (e.g. _include results) the caller may not see."""

    def filter_history(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return entries

    def check_bundle(self, bundle: Any) -> None:
        """Check every entry of a transaction/batch before anything runs."""

    def audit_search(self, resource_type: str, query: str, bundle: dict[str, Any]) -> None:
        """Record the patients whose data a search returned (one AuditEvent each)."""
        if self.recorder is not None:
            found = [e["resource"] for e in bundle.get("entry") or [] if "resource" in e]
            self.recorder.record_search(self.ctx, resource_type, query, found)

    def audit(self, action: str, resource: dict[str, Any] | None, outcome: str = "0") -> None:
        """Record an AuditEvent for a read or write of patient data."""
        if self.recorder is not None and resource is not None:
            self.recorder.record(self.ctx, action, resource, outcome)

    def audit_export(self, stage: str, *, job_url: str, **details: Any) -> None:
        """Record a step of a Bulk Data export (kick-off, complete, download)."""
        if self.recorder is not None:
            self.recorder.record_export(self.ctx, stage, job_url=job_url, **details)


class SmartAccess(Access):
    """SMART on FHIR scopes and the patient compartment, for one verified token."""

    def __init__(self, ctx: AuthContext, recorder: Any = None, store: Any = None) -> None:
        super().__init__(ctx, recorder)
        self._guard: SearchGuard | None = None
        self._store = store

    def require(self, resource_type: str, interaction: str, resource: Any = None) -> None:
        authorize(
            self.ctx,
            resource_type,
            INTERACTION.get(interaction, interaction),
            resource=resource if isinstance(resource, dict) else None,
        )

    def require_system(self, what: str) -> None:
        if not any(s.level in ("user", "system") for s in self.ctx.scopes.resource):
            raise Forbidden(f"{what} needs a user/ or system/ scope")

    def bulk_types(self) -> frozenset[str] | None:
        """Bulk Data is for backend services: system-level scopes granting read and search
        (`system/*.rs`, `system/*.read`, or per type); patient and user tokens are refused."""
        if self.ctx.patient is not None:
            raise Forbidden("Bulk Data export needs a system/ scope, not a patient context")
        granted = [
            s
            for s in self.ctx.scopes.resource
            if s.level == "system" and {"r", "s"} <= s.permissions and not s.query
        ]
        if not granted:
            raise Forbidden(
                "Bulk Data export needs a backend-services token with system/*.rs "
                "(or system/<type>.rs for each type exported)"
            )
        if any(s.resource_type == "*" for s in granted):
            return None
        return frozenset(s.resource_type for s in granted)

    @property
    def client(self) -> str | None:
        return self.ctx.client_id or self.ctx.subject

    def search_restriction(self, resource_type: str) -> list[tuple[str, str]]:
        self._guard = search_guard(self.ctx, resource_type)
        return list(self._guard.params)

    def filter_bundle(self, bundle: dict[str, Any]) -> None:
        guard = self._guard
        entries = bundle.get("entry") or []
        kept = [
            e
            for e in entries
            if (guard.allows(e["resource"]) if guard else allowed(self.ctx, e["resource"]))
        ]
        if len(kept) != len(entries):
            bundle["entry"] = kept

    def filter_history(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Keep the versions the token may read; a deletion only where the token may read
        the type without a patient restriction."""
        kept = []
        for entry in entries:
            resource = entry.get("resource")
            if resource is not None:
                if allowed(self.ctx, resource):
                    kept.append(entry)
                continue
            rtype = str((entry.get("request") or {}).get("url", "")).split("/")[0]
            if self.ctx.patient is None and self._may_read_type(rtype):
                kept.append(entry)
        return kept

    def _may_read_type(self, resource_type: str) -> bool:
        try:
            authorize(self.ctx, resource_type, "history-type")
        except Forbidden:
            return False
        return True

    def check_bundle(self, bundle: Any) -> None:
        if not isinstance(bundle, dict):
            return
        for i, entry in enumerate(bundle.get("entry") or []):
            request = entry.get("request") or {} if isinstance(entry, dict) else {}
            method = request.get("method")
            url = str(request.get("url", ""))
            rtype = url.split("?")[0].split("/")[0]
            try:
                if method in ("GET", "HEAD"):
                    if self.ctx.patient is not None:
                        raise Forbidden("reads inside a Bundle need a user/ or system/ scope")
                    self.require(rtype, "search" if "/" not in url.split("?")[0] else "read")
                    continue
                interaction = METHOD_INTERACTION.get(method or "")
                if interaction is None:
                    continue
                body = entry.get("resource")
                # a PATCH entry's resource is the patch (Binary/Parameters), not the target
                self.require(rtype, interaction, body if method in ("POST", "PUT") else None)
                parts = url.split("?")[0].split("/")
                if self._store is not None and len(parts) == 2 and self._store.exists(*parts):
                    self.require(rtype, interaction, self._store.read(*parts))
                if (
                    method in ("PUT", "PATCH", "DELETE")
                    and "?" in url
                    and self.ctx.patient is not None
                ):
                    raise Forbidden("conditional writes need a user/ or system/ scope")
            except Forbidden as exc:
                exc.diagnostics = f"Bundle.entry[{i}]: {exc.diagnostics}"
                raise


def access_for(request: Request) -> Access:
    """The Access for this request (verifies the bearer token under SMART)."""
    factory = getattr(request.app.state, "access_factory", None)
    if factory is None:
        return Access(recorder=getattr(request.app.state, "audit", None))
    return factory(request)


async def get_access(request: Request) -> Access:
    """`access_for` as a FastAPI dependency. Async, so the common case costs no worker-thread
    hop; token verification (which may fetch a JWKS) runs in a worker thread."""
    if getattr(request.app.state, "access_factory", None) is None:
        return access_for(request)
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(access_for, request)
