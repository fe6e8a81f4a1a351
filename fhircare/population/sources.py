"""Where stratify's ndjson comes from: a folder, fhircare's embedded store, or a Bulk Data
`$export` of a FHIR server (fhircare or HAPI) pulled by `bulk_pull.pull_export`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from fhircare.population.rules import case_finding
from fhircare.store.base import Store


class SourceProblem(ValueError):
    """The source cannot be read: one line for the user."""


def needed_types() -> list[str]:
    """The resource types the case-finding views read."""
    cf = case_finding()
    return sorted({cf.panel.resource} | {v.resource for v in cf.views.values()})


def dump_store(store: Store, folder: Path) -> dict[str, int]:
    """Write the store's resources of the needed types as folder/<Type>.ndjson."""
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for rtype in needed_types():
        n = 0
        tmp = folder / f".{rtype}.ndjson.tmp"
        with tmp.open("wb") as fh:
            for resource in store.iter_resources(rtype):
                fh.write(orjson.dumps(resource) + b"\n")
                n += 1
        tmp.replace(folder / f"{rtype}.ndjson")
        counts[rtype] = n
    return counts


def pull(
    base_url: str,
    folder: Path,
    *,
    auth: Any = None,
    on_progress: Callable[[str, float | None], None] | None = None,
) -> list[Path]:
    """A system-level `$export` of the needed types, downloaded into `folder`."""
    from fhircare.population.bulk_pull import BulkExportError, pull_export

    try:
        return pull_export(
            base_url,
            folder,
            level="system",
            types=needed_types(),
            auth=auth,
            on_progress=on_progress,
        )
    except BulkExportError as exc:
        raise SourceProblem(f"{base_url}: {exc}") from None
