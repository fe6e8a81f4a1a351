"""Per-request access for the API edge: the caller's gated services, and audit.

`get_access` gives each request an `Access`: the caller's `AuthContext` (the verified bearer
token under ``FHIRCARE_AUTH=smart``; everything under ``FHIRCARE_AUTH=none``, local use
only), and the services bound to the one access gate (`fhircare.security.gate`): `store`,
`svc` and `bundles` see and write only what the caller's scopes reach. Routes and
operations use these, never the container's store. Reads and searches of patient data are
recorded as AuditEvents here, writes by the gate.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from fhircare.fhir.errors import Forbidden
from fhircare.security.context import AuthContext
from fhircare.security.gate import GatedStore
from fhircare.security.policy import AccessPolicy
from fhircare.security.scopes import required
from fhircare.services.bundles import BundleProcessor
from fhircare.services.resources import ResourceService

INTERACTION = {"search": "search-type"}
UNRESTRICTED = AuthContext.unrestricted()  # FHIRCARE_AUTH=none: parsed once, not per request


class Access:
    """One caller's view of the server: the gated store and services, and its audit."""

    def __init__(
        self,
        ctx: AuthContext | None,
        recorder: Any,
        svc: ResourceService,
        bundles: BundleProcessor,
    ) -> None:
        self.authenticated = ctx is not None  # a verified token (FHIRCARE_AUTH=smart)
        self.ctx = ctx or UNRESTRICTED
        self.recorder = recorder
        self.policy = AccessPolicy(self.ctx, bases=(bundles.base_url,))
        self.store = GatedStore(
            svc.store, self.policy, on_write=self._audit_write if recorder else None
        )
        self.svc = svc.scoped(self.store)
        self.bundles = bundles.scoped(self.svc)

    @property
    def patient(self) -> str | None:
        return self.ctx.patient

    def require(self, resource_type: str, interaction: str, resource: Any = None) -> None:
        """Raise Forbidden unless the interaction is allowed on the type (and resource):
        for edges that act on something other than a stored resource."""
        letter = required(INTERACTION.get(interaction, interaction))
        data = resource if isinstance(resource, dict) else None
        if letter in "rs":
            self.policy.check_read(resource_type, letter, data)
        elif data is None:
            self.policy.rules(resource_type, letter)  # type level only
        else:
            self.policy.check_write(resource_type, letter, data, creating=letter == "c")

    def require_system(self, what: str) -> None:
        """Raise Forbidden unless the caller may act across patients (user/ or system/)."""
        if not any(s.level in ("user", "system") for s in self.ctx.scopes.resource):
            raise Forbidden(f"{what} needs a user/ or system/ scope")

    def bulk_types(self) -> frozenset[str] | None:
        """The types a Bulk Data export may hold for this caller (None: every type).

        Bulk Data is for backend services: system-level scopes granting read and search
        (`system/*.rs`, `system/*.read`, or per type), with no query; patient and user
        tokens are refused (Forbidden)."""
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
        """The client the token was issued to (None without SMART)."""
        if not self.authenticated:
            return None
        return self.ctx.client_id or self.ctx.subject

    def audit_search(self, resource_type: str, query: str, bundle: dict[str, Any]) -> None:
        """Record the patients whose data a search returned (one AuditEvent each)."""
        if self.recorder is not None:
            found = [e["resource"] for e in bundle.get("entry") or [] if "resource" in e]
            self.recorder.record_search(self.ctx, resource_type, query, found)

    def audit(self, action: str, resource: dict[str, Any] | None, outcome: str = "0") -> None:
        """Record an AuditEvent for a read of patient data (writes: see `_audit_write`)."""
        if self.recorder is not None and resource is not None:
            self.recorder.record(self.ctx, action, resource, outcome)

    def audit_export(self, stage: str, *, job_url: str, **details: Any) -> None:
        """Record a step of a Bulk Data export (kick-off, complete, download)."""
        if self.recorder is not None:
            self.recorder.record_export(self.ctx, stage, job_url=job_url, **details)

    def _audit_write(self, action: str, resource: dict[str, Any]) -> None:
        self.recorder.record(self.ctx, action, resource, "0")


def access_for(request: Request) -> Access:
    """The Access for this request (verifies the bearer token under SMART)."""
    st = request.app.state
    authenticate = getattr(st, "authenticate", None)
    if authenticate is None:
        return _open_access(st)
    return Access(authenticate(request), getattr(st, "audit", None), st.svc, st.bundles)


def _open_access(st: Any) -> Access:
    """Without SMART every request's Access is the same: built once per app (it holds no
    per-request state), again only if the app's services are replaced."""
    parts = (getattr(st, "audit", None), st.svc, st.bundles)
    cached: tuple[tuple[Any, ...], Access] | None = getattr(st, "open_access", None)
    if cached is None or any(a is not b for a, b in zip(cached[0], parts, strict=True)):
        cached = (parts, Access(None, *parts))
        st.open_access = cached
    return cached[1]


async def get_access(request: Request) -> Access:
    """`access_for` as a FastAPI dependency. Async, so the common case costs no worker-thread
    hop; token verification (which may fetch a JWKS) runs in a worker thread."""
    if getattr(request.app.state, "authenticate", None) is None:
        return access_for(request)
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(access_for, request)
