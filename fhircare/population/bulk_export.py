"""What a `$export` holds, written as ndjson files: one or more files per resource type.

System level: every live resource of the requested types (default: every type the store
holds). Patient level: the resources in any patient's compartment (the R4 Patient
CompartmentDefinition, through `fhircare.security.compartment`). Group level: those in
the compartments of the Group's active Patient members. `patient` (Patient and Group
level) keeps the compartments of the patients it names (at Group level, of those of them
that are members). `_since` keeps the resources whose
`meta.lastUpdated` is at or after it. The export notes the patients whose data (by the
same compartment rules) its files hold, for the audit trail.

The store is read one type at a time through `iter_resources` (the embedded store holds
its lock only to take the list), so writers are not held up while a file is written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fhircare.fhir import jsonio, registry
from fhircare.fhir.errors import NotFound
from fhircare.population.bulk_request import ExportRequest
from fhircare.security.compartment import (
    PATIENT_COMPARTMENT,
    compartment_references,
    patient_id_of,
)
from fhircare.store.base import Store

Resource = dict[str, Any]
Progress = Callable[[int, int, str], None]  # (types done, types in all, current type)


class Cancelled(Exception):
    """The job was cancelled (DELETE on its status URL) while it ran."""


@dataclass(frozen=True)
class OutputFile:
    """One ndjson file of an export."""

    type: str
    name: str
    count: int


@dataclass
class ExportResult:
    """What `write_export` wrote: the files, the error files, and the ids of the patients
    whose data the files hold (for the audit trail)."""

    outputs: list[OutputFile]
    errors: list[OutputFile]
    patients: set[str]


def group_members(store: Store, group_id: str, *, bases: Iterable[str] = ()) -> set[str]:
    """The ids of the Group's active Patient members; NotFound when there is no such Group."""
    group = store.read("Group", group_id)
    members = set()
    for member in group.get("member") or []:
        if member.get("inactive") is True:
            continue
        pid = patient_id_of(str((member.get("entity") or {}).get("reference", "")), bases)
        if pid:
            members.add(pid)
    return members


def export_types(store: Store, request: ExportRequest) -> list[str]:
    """The types the export writes, in a stable order."""
    if request.types is not None:
        return list(request.types)
    if request.level == "system":
        held = getattr(store, "resource_types", None)
        names = held() if callable(held) else registry.resource_types()
        return [t for t in names if registry.is_resource_type(t)]
    return ["Patient"] + sorted(t for t in PATIENT_COMPARTMENT if t != "Patient")


def _updated_at_or_after(resource: Resource, since: datetime) -> bool:
    text = (resource.get("meta") or {}).get("lastUpdated")
    if not isinstance(text, str):
        return True  # no timestamp: never silently dropped
    try:
        updated = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return True
    return updated >= since


def patients_of(resource: Resource, bases: Sequence[str] = ()) -> set[str]:
    """The ids of the patients in whose compartment the resource is (a Patient: its own)."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        rid = resource.get("id")
        return {rid} if isinstance(rid, str) else set()
    if rtype not in PATIENT_COMPARTMENT:
        return set()
    found = (patient_id_of(ref, bases) for ref in compartment_references(resource))
    return {pid for pid in found if pid is not None}


def resources_of_type(
    store: Store,
    request: ExportRequest,
    resource_type: str,
    *,
    members: set[str] | None,
    bases: Sequence[str] = (),
    seen: set[str] | None = None,
) -> Iterator[Resource]:
    """The resources of one type that the export holds; the ids of the patients whose
    data they are go into `seen` (when given; AuditEvents count for none, as reading them
    is not audited either)."""
    in_compartment_types = resource_type == "Patient" or resource_type in PATIENT_COMPARTMENT
    if request.level != "system" and not in_compartment_types:
        return
    if request.level == "group" and resource_type == "Patient":
        source: Iterable[Resource] = _read_many(store, "Patient", sorted(members or ()))
    else:
        source = store.iter_resources(resource_type)
    track = seen is not None and in_compartment_types and resource_type != "AuditEvent"
    for resource in source:
        if request.since is not None and not _updated_at_or_after(resource, request.since):
            continue
        if request.level != "system" or track:
            owners = patients_of(resource, bases)
            if request.level != "system" and not (
                owners if members is None else not owners.isdisjoint(members)
            ):
                continue
            if track and seen is not None:
                seen |= owners
        yield resource


def _read_many(store: Store, resource_type: str, ids: Iterable[str]) -> Iterator[Resource]:
    for rid in ids:
        try:
            yield store.read(resource_type, rid)
        except NotFound:  # a member deleted (Gone) or never written: not exported
            continue


def write_export(
    store: Store,
    request: ExportRequest,
    directory: Path,
    *,
    max_lines: int,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
    bases: Sequence[str] = (),
) -> ExportResult:
    """Write the export's ndjson files into `directory`.

    A type that cannot be read (a remote store failing) becomes an OperationOutcome line
    in `OperationOutcome.ndjson` and the others are still written. Raises Cancelled when
    `cancel` is set."""
    members = None
    if request.level == "group" and request.group_id is not None:
        members = group_members(store, request.group_id, bases=bases)
    if request.patients is not None:  # `patient`: only these (a Group's: those of its members)
        given = set(request.patients)
        members = given if members is None else members & given
    types = export_types(store, request)
    outputs: list[OutputFile] = []
    failures: list[Resource] = []
    patients: set[str] = set()
    for done, rtype in enumerate(types):
        if progress is not None:
            progress(done, len(types), rtype)
        found: set[str] = set()
        try:
            outputs += _write_type(
                directory,
                rtype,
                resources_of_type(store, request, rtype, members=members, bases=bases, seen=found),
                max_lines=max_lines,
                cancel=cancel,
            )
        except Cancelled:
            raise
        except Exception as exc:  # one type failing does not lose the others
            failures.append(_outcome(f"{rtype} could not be exported: {exc}"))
            continue
        patients |= found
    errors: list[OutputFile] = []
    if failures:
        path = directory / "OperationOutcome.ndjson"
        path.write_bytes(b"".join(jsonio.dumps(f) + b"\n" for f in failures))
        errors.append(OutputFile("OperationOutcome", path.name, len(failures)))
    if progress is not None:
        progress(len(types), len(types), "")
    return ExportResult(outputs, errors, patients)


def _write_type(
    directory: Path,
    resource_type: str,
    resources: Iterable[Resource],
    *,
    max_lines: int,
    cancel: threading.Event | None,
) -> list[OutputFile]:
    """`Type.ndjson`, then `Type.2.ndjson`... of at most `max_lines` lines; no empty file."""
    files: list[OutputFile] = []
    handle = None
    name = ""
    lines = 0
    try:
        for resource in resources:
            if cancel is not None and cancel.is_set():
                raise Cancelled
            if handle is None or lines >= max_lines:
                if handle is not None:
                    handle.close()
                    files.append(OutputFile(resource_type, name, lines))
                name = (
                    f"{resource_type}.ndjson"
                    if not files
                    else (f"{resource_type}.{len(files) + 1}.ndjson")
                )
                handle = (directory / name).open("wb")
                lines = 0
            handle.write(jsonio.dumps(resource) + b"\n")
            lines += 1
    finally:
        if handle is not None:
            handle.close()
    if handle is not None:
        files.append(OutputFile(resource_type, name, lines))
    return files


def _outcome(diagnostics: str) -> Resource:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception", "diagnostics": diagnostics}],
    }
