"""The `Store` protocol every backend implements.

Resources are plain FHIR JSON dicts. The store owns `id` (on create), `meta.versionId`
and `meta.lastUpdated`. Writes given to `commit` are applied all-or-nothing and made
durable before `commit` returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from fhircare.fhir.registry import SearchRegistry

Method = Literal["create", "update", "delete"]


def new_id() -> str:
    """A new resource id: a random (version 4) UUID in its canonical form. A valid FHIR id
    ([A-Za-z0-9-.]{1,64}) that always has dashes, as HAPI wants of the ids a client chooses
    (`fhircare.remote.ids`), and usable as is in a `urn:uuid:` fullUrl (the FHIR uuid type
    wants the canonical 8-4-4-4-12 form; care modules write such fullUrls)."""
    return str(uuid.uuid4())


@dataclass
class WriteOp:
    """One write inside an atomic commit.

    `create` assigns a new id unless `resource["id"]` is set and `keep_id` is true;
    `update` creates the resource when absent (client-assigned id);
    `if_match` is the expected current versionId ("3"), checked inside the commit.
    """

    method: Method
    resource_type: str
    id: str | None = None
    resource: dict[str, Any] | None = None
    if_match: str | None = None
    keep_id: bool = False
    origin: str = "local"  # "local" writes go to the sync outbox; "remote" ones came from sync
    cascade: bool = False  # delete: also delete what references it (where the store offers it)
    # The caller hands `resource` over and never touches it (nor the result's) again: the
    # store may keep it without a copy (the audit recorder's fresh AuditEvents).
    handed_over: bool = False


@dataclass
class WriteResult:
    resource_type: str
    id: str
    version_id: str
    last_updated: str
    created: bool = False
    deleted: bool = False
    resource: dict[str, Any] | None = None


@dataclass
class SearchResult:
    """One page of a search: every match counted, the page's resources in order."""

    total: int
    resources: list[dict[str, Any]]


@dataclass
class Change:
    """One entry of the store's change log (monotonic `seq`)."""

    seq: int
    resource_type: str
    id: str
    version_id: str
    deleted: bool
    origin: str
    last_updated: str
    resource: dict[str, Any] | None = field(default=None)


class Store(Protocol):
    """A FHIR resource store with versions, history and atomic multi-resource commits."""

    # The search parameters its searches understand (the specification's, plus the
    # SearchParameter resources the store indexes itself).
    registry: SearchRegistry

    def read(self, resource_type: str, id: str) -> dict[str, Any]:
        """The current version; raises NotFound or Gone (deleted)."""

    def vread(self, resource_type: str, id: str, version_id: str) -> dict[str, Any]:
        """One version; raises NotFound or Gone."""

    def exists(self, resource_type: str, id: str) -> bool:
        """True when a live (not deleted) current version exists."""

    def current_version(self, resource_type: str, id: str) -> str | None:
        """The current versionId, deleted or not, or None when never written."""

    def commit(self, ops: list[WriteOp]) -> list[WriteResult]:
        """Apply every op or none; durable on return."""

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Every live resource of the type matching the FHIR search parameters."""

    def search_page(
        self,
        resource_type: str,
        params: list[tuple[str, str]],
        *,
        offset: int = 0,
        count: int | None = None,
    ) -> SearchResult:
        """The matches' total and the resources of one page (`count` None: all)."""

    def history(
        self,
        resource_type: str | None = None,
        id: str | None = None,
        since: str | None = None,
    ) -> list[dict[str, Any]]:
        """Versions newest first, as Bundle history entries (resource/request/response)."""

    def iter_resources(self, resource_type: str) -> Iterable[dict[str, Any]]:
        """Every live resource of a type."""

    def changes(self, after_seq: int, limit: int | None = None) -> list[Change]:
        """Change-log entries with seq > after_seq, oldest first."""

    def get_meta(self, key: str, default: Any = None) -> Any:
        """A small durable key/value (sync watermarks, processed events)."""

    def set_meta(self, key: str, value: Any) -> None:
        """Set one durable key/value."""

    def close(self) -> None:
        """Release the store (file locks, connections)."""
