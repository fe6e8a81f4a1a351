"""Server-kept metadata: what a server owns (`meta.versionId`, `meta.lastUpdated`)."""

from __future__ import annotations

from typing import Any

SERVER_META = ("versionId", "lastUpdated")


def without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy without versionId/lastUpdated (and without an empty `meta`), as a
    client sends it to a server or as two versions compare."""
    out = {k: v for k, v in resource.items() if k != "meta"}
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in SERVER_META}
    if meta:
        out["meta"] = meta
    return out
