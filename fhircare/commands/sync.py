"""`fhircare sync ...`: two-way sync with a HAPI FHIR server.

Every failure is one line on stderr: exit 2 for what the user must fix first (no server
configured, a data folder in use, a Subscription the server does not activate), exit 1 when
the work ran but did not all go through (the server was unreachable, refused resources, or
found conflicts); exit 0 when everything did.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from fhircare.bootstrap import Container
    from fhircare.config import Settings
    from fhircare.remote.client import FhirClient

app = typer.Typer(help="Two-way sync with a HAPI FHIR server.", no_args_is_help=True)

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Data folder of the embedded store (FHIRCARE_DATA)")
]
HapiOpt = Annotated[str | None, typer.Option("--hapi-url", help="HAPI base (FHIRCARE_HAPI_URL)")]
LISTED = 5  # references named on one line before "+N more"


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit with `code`."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment and the options; each problem one line, exit 2."""
    from pydantic import ValidationError

    from fhircare.config import Settings, config_errors

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for line in config_errors(exc):
            err.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


def _named(refs: list[str]) -> str:
    more = len(refs) - LISTED
    return ", ".join(refs[:LISTED]) + (f" (+{more} more)" if more > 0 else "")


def _client(settings: Settings) -> FhirClient:
    from fhircare.remote.factory import remote_client

    if not settings.hapi_url:
        fail("no HAPI server: set FHIRCARE_HAPI_URL or pass --hapi-url")
    try:
        return remote_client(settings)
    except (OSError, ValueError) as exc:  # an unreadable key file, a bad key
        fail(f"cannot set up the HAPI client: {exc}")


@contextmanager
def _session(data: Path | None, hapi_url: str | None) -> Iterator[tuple[Settings, Container, Any]]:
    """Settings, the local store's container and a HAPI client; closed on the way out."""
    from fhircare.bootstrap import build_container
    from fhircare.fhir.errors import StoreLocked

    settings = _settings(data=data, hapi_url=hapi_url)
    if settings.store == "hapi":
        fail("FHIRCARE_STORE=hapi: HAPI is the store itself, there is nothing to sync")
    client = _client(settings)
    try:
        container = build_container(settings)
    except StoreLocked as exc:
        client.close()
        fail(f"{exc} (stop `fhircare serve` or let its background sync run)")
    try:
        yield settings, container, client
    finally:
        client.close()
        container.close()


def _progress(label: str) -> tuple[Any, Callable[[int, int], None]]:
    """A rich progress bar on stderr and its callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total or None)

    return bar, update


@app.command("push")
def sync_push(data: DataOpt = None, hapi_url: HapiOpt = None) -> None:
    """Send local changes to HAPI (durable outbox, transaction Bundles, dependency order).

    Each write is conditional on the version last seen in HAPI: an edit made there since is a
    conflict, settled under FHIRCARE_SYNC_POLICY, never overwritten silently.
    """
    from fhircare.fhir.errors import FhirError
    from fhircare.remote.sync import conflicts, push

    with _session(data, hapi_url) as (settings, container, client):
        bar, update = _progress("push")
        try:
            with bar:
                report = push(
                    container.store,
                    client,
                    batch_size=settings.sync_batch_size,
                    policy=settings.sync_policy,
                    progress=update,
                )
        except FhirError as exc:
            fail(f"push stopped, nothing acknowledged was lost; run it again: {exc.diagnostics}", 1)
        still_open = sorted(conflicts(container.store))
    console.print(
        f"pushed {report.pushed} resources, {report.deleted} deletions in "
        f"{report.bundles} Bundles ({report.seconds:.1f} s); conflicts settled: "
        f"{report.remote_wins} remote-wins, {report.local_wins} local-wins"
    )
    problems = []
    if report.rejected:
        first = next(iter(report.rejected.values()))
        problems.append(
            f"{len(report.rejected)} refused by the server: {_named(sorted(report.rejected))} "
            f"(first: {first})"
        )
    if still_open:
        problems.append(
            f"{len(still_open)} held by conflicts (edited in HAPI too): {_named(still_open)}; "
            "settle with `fhircare sync resolve Type/id --keep local|remote`"
        )
    if problems:
        fail("; ".join(problems), 1)


@app.command("pull")
def sync_pull(
    data: DataOpt = None,
    hapi_url: HapiOpt = None,
    patient: Annotated[list[str] | None, typer.Option(help="Patient/x to pull")] = None,
) -> None:
    """Bring HAPI changes since the last pull into the local store (incremental).

    Then process the finished discharges not yet processed.
    """
    from fhircare.fhir.errors import FhirError
    from fhircare.remote.sync import pull
    from fhircare.services.background import process_missed_discharges

    with _session(data, hapi_url) as (settings, container, client):
        types = [t.strip() for t in settings.sync_types.split(",") if t.strip()]
        bar, update = _progress("pull")
        try:
            with bar:
                report = pull(
                    container.store,
                    client,
                    types=types,
                    patients=patient or None,
                    policy=settings.sync_policy,
                    progress=update,
                )
        except FhirError as exc:
            fail(f"pull stopped (watermarks kept; run it again): {exc.diagnostics}", 1)
        processed = process_missed_discharges(container)
    console.print(
        f"pulled {report.fetched} resources ({report.created} new, {report.updated} "
        f"updated, {len(report.conflicts)} conflicts) in {report.seconds:.1f} s; "
        f"discharges processed: {processed}"
    )


@app.command("status")
def sync_status(data: DataOpt = None) -> None:
    """Outbox size, watermarks, open conflicts and refused resources (JSON)."""
    from fhircare.bootstrap import build_container
    from fhircare.fhir.errors import StoreLocked
    from fhircare.remote.sync import status

    settings = _settings(data=data, seed_definitions=False)
    try:
        container = build_container(settings)
    except StoreLocked as exc:
        sys.stdout.write(json.dumps(_ask_server(settings, "/sync/status", exc), indent=2) + "\n")
        return
    try:
        sys.stdout.write(json.dumps(status(container.store), indent=2) + "\n")
    finally:
        container.close()


def _ask_server(settings: Settings, path: str, locked: Exception) -> Any:
    """GET `path` from the `fhircare serve` that holds the data folder (read-only commands
    work while it runs)."""
    import httpx

    from fhircare.commands.running import running_server

    url = running_server(settings.data)
    if url is None:
        fail(str(locked))
    try:
        response = httpx.get(f"{url}{path}", timeout=30)
    except httpx.HTTPError as exc:
        fail(f"the data folder is held by `fhircare serve` at {url}, which did not answer ({exc})")
    if response.status_code != 200:
        fail(f"`fhircare serve` at {url} answered {response.status_code} to {path}")
    return response.json()


@app.command("resolve")
def sync_resolve(
    reference: Annotated[str, typer.Argument(help="Type/id of a flagged conflict")],
    keep: Annotated[str, typer.Option(help="local or remote")] = "local",
    data: DataOpt = None,
    hapi_url: HapiOpt = None,
) -> None:
    """Close a flagged sync conflict, keeping the local or the remote version."""
    from fhircare.fhir.errors import FhirError, NotFound
    from fhircare.remote.sync import resolve

    if keep not in ("local", "remote") or reference.count("/") != 1:
        fail("usage: fhircare sync resolve Type/id --keep local|remote")
    rtype, rid = reference.split("/")
    with _session(data, hapi_url) as (_, container, client):
        try:
            resolve(container.store, client, rtype, rid, keep)  # type: ignore[arg-type]
        except NotFound as exc:
            fail(exc.diagnostics)
        except FhirError as exc:
            fail(f"{reference} not resolved: {exc.diagnostics}", 1)
    console.print(f"{reference}: kept the {keep} version")


@app.command("subscribe")
def sync_subscribe(
    endpoint: Annotated[
        str, typer.Option(help="fhircare's webhook base, e.g. http://host:8000/events/hapi")
    ],
    criteria: Annotated[str, typer.Option(help="Subscription criteria")] = (
        "Encounter?status=finished"
    ),
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for HAPI to activate the Subscription")
    ] = 30.0,
    hapi_url: HapiOpt = None,
) -> None:
    """Register a rest-hook Subscription on HAPI so its discharges reach fhircare.

    Waits until HAPI activates it; otherwise deletes it and names the HAPI setting to enable.
    """
    from fhircare.fhir.errors import FhirError
    from fhircare.remote.sync import SubscriptionNotActive, subscribe

    settings = _settings(hapi_url=hapi_url)
    client = _client(settings)
    header = f"Authorization: Bearer {settings.webhook_secret}" if settings.webhook_secret else None
    try:
        sub = subscribe(
            client, criteria=criteria, endpoint=endpoint, header=header, timeout=timeout
        )
    except SubscriptionNotActive as exc:
        fail(exc.diagnostics)
    except FhirError as exc:
        fail(f"could not subscribe: {exc.diagnostics}", 1)
    finally:
        client.close()
    console.print(f"Subscription/{sub['id']} is {sub.get('status')}: {criteria} -> {endpoint}")
