"""The `fhircare` command (typer + rich)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fhircare.config import Settings

app = typer.Typer(
    help="fhircare: care management on FHIR R4 (care plans, goals, tasks, transitions of care).",
    no_args_is_help=True,
    add_completion=False,
)
sync_app = typer.Typer(help="Two-way sync with a HAPI FHIR server.", no_args_is_help=True)
app.add_typer(sync_app, name="sync")

console = Console()
err = Console(stderr=True)

DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Data folder of the embedded store (FHIRCARE_DATA)")
]


def _settings(**overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**values)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (FHIRCARE_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (FHIRCARE_PORT)")] = None,
    data: DataOpt = None,
) -> None:
    """Serve the FHIR API (/fhir), operations and event intake."""
    import uvicorn

    from fhircare.api.app import create_app
    from fhircare.fhir.errors import StoreLocked

    settings = _settings(host=host, port=port, data=data)
    loopback = settings.host in ("127.0.0.1", "localhost", "::1")
    if settings.auth == "none" and not loopback and not settings.allow_unauthenticated_remote:
        err.print(
            f"[yellow]FHIRCARE_AUTH=none: refusing to bind {settings.host}; "
            "binding 127.0.0.1 (set FHIRCARE_AUTH=smart to serve other hosts)[/]"
        )
        settings.host = "127.0.0.1"
    try:
        application = create_app(settings)
    except StoreLocked as exc:
        _fail(str(exc))
    mode = "no authentication (local use only)" if settings.auth == "none" else "SMART on FHIR"
    err.print(
        f"fhircare serving http://{settings.host}:{settings.port}/fhir "
        f"(store: {settings.store}, data: {settings.data}, auth: {mode})"
    )
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="warning")


@app.command()
def demo(data: DataOpt = None) -> None:
    """Run the whole care-management cycle on a sample patient and print what it did."""
    from fhircare.bootstrap import build_container
    from fhircare.care.demo import run_demo
    from fhircare.fhir.errors import StoreLocked

    settings = _settings(data=data)
    try:
        container = build_container(settings)
    except StoreLocked as exc:
        _fail(str(exc))
    try:
        counts = run_demo(container.store, console)
    finally:
        container.close()
    console.print(
        f"[green]demo done[/]: {sum(counts.values())} resources written in {settings.data}"
    )


@app.command()
def reconcile(
    bundle: Annotated[Path, typer.Argument(help="Bundle with Patient, Encounter, medications")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Reconcile a discharge's medication lists from a FHIR Bundle file."""
    from fhircare.fhir.errors import FhirError
    from fhircare.transitions.reconcile_cli import render_table, run_reconcile

    data = load_json_file(bundle)
    try:
        result = run_reconcile(data)
    except FhirError as exc:
        _fail(f"{bundle}: {exc.diagnostics}")
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        console.print(render_table(result))


@app.command()
def mllp(
    port: Annotated[int, typer.Option(help="MLLP port")] = 2575,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    data: DataOpt = None,
) -> None:
    """Listen for HL7 v2 ADT messages over MLLP; reply with ACKs (AA, AE, AR)."""
    import asyncio

    from fhircare.bootstrap import build_container
    from fhircare.fhir.errors import StoreLocked
    from fhircare.services.intake import Hl7Intake
    from fhircare.transitions.hl7v2_ack import build_ack
    from fhircare.transitions.mllp import serve_mllp

    settings = _settings(data=data)
    try:
        container = build_container(settings)
    except StoreLocked as exc:
        _fail(str(exc))
    intake = Hl7Intake(container.bundles, default_tz=settings.default_tz)
    allowed = (
        {a.strip() for a in settings.mllp_allowed.split(",") if a.strip()}
        if settings.mllp_allowed
        else None
    )

    async def handler(raw: bytes) -> bytes:
        return await asyncio.to_thread(intake.handle, raw)

    def on_error(raw: bytes, exc: Exception) -> bytes:
        return build_ack(raw, "AR", f"Message refused: {type(exc).__name__}").encode()

    async def main() -> None:
        server = await serve_mllp(host, port, handler, allowed_clients=allowed, on_error=on_error)
        err.print(f"fhircare MLLP listening on {host}:{port} (data: {settings.data})")
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        container.close()


def _sync_setup(data: Path | None, hapi_url: str | None):  # noqa: ANN202
    from fhircare.bootstrap import build_container
    from fhircare.fhir.errors import StoreLocked
    from fhircare.remote.factory import remote_client

    settings = _settings(data=data, hapi_url=hapi_url)
    if not settings.hapi_url:
        _fail("no HAPI server: set FHIRCARE_HAPI_URL or pass --hapi-url")
    if settings.store == "hapi":
        _fail("FHIRCARE_STORE=hapi: HAPI is the store itself, there is nothing to sync")
    try:
        container = build_container(settings)
    except StoreLocked as exc:
        _fail(f"{exc} (stop `fhircare serve` or let its background sync run)")
    return settings, container, remote_client(settings)


HapiOpt = Annotated[str | None, typer.Option("--hapi-url", help="HAPI base (FHIRCARE_HAPI_URL)")]


def _progress(label: str):  # noqa: ANN202 - a rich Progress plus its callback
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


@sync_app.command("push")
def sync_push(data: DataOpt = None, hapi_url: HapiOpt = None) -> None:
    """Send local changes to HAPI (durable outbox, transaction Bundles, dependency order)."""
    from fhircare.fhir.errors import FhirError
    from fhircare.remote.sync import push

    settings, container, client = _sync_setup(data, hapi_url)
    bar, update = _progress("push")
    try:
        with bar:
            report = push(
                container.store, client, batch_size=settings.sync_batch_size, progress=update
            )
    except FhirError as exc:
        _fail(f"push stopped, nothing acknowledged was lost; run it again: {exc.diagnostics}", 1)
    finally:
        client.close()
        container.close()
    console.print(
        f"pushed {report.pushed} resources, {report.deleted} deletions in "
        f"{report.bundles} Bundles ({report.seconds:.1f} s); held by conflicts: "
        f"{len(report.held)}"
    )


@sync_app.command("pull")
def sync_pull(
    data: DataOpt = None,
    hapi_url: HapiOpt = None,
    patient: Annotated[list[str] | None, typer.Option(help="Patient/x to pull")] = None,
) -> None:
    """Bring HAPI changes since the last pull into the local store (incremental)."""
    from fhircare.fhir.errors import FhirError
    from fhircare.remote.sync import pull
    from fhircare.transitions import discharge

    settings, container, client = _sync_setup(data, hapi_url)
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
        missed = discharge.find_unprocessed(container.store)
        for encounter in missed:
            written = discharge.process_discharge(
                container.store,
                encounter,
                care_manager=settings.care_manager,
                window_days=settings.followup_window_days,
            )
            container.bus.publish(container.store, written)
    except FhirError as exc:
        _fail(f"pull stopped (watermarks kept; run it again): {exc.diagnostics}", 1)
    finally:
        client.close()
        container.close()
    console.print(
        f"pulled {report.fetched} resources ({report.created} new, {report.updated} "
        f"updated, {len(report.conflicts)} conflicts) in {report.seconds:.1f} s; "
        f"discharges processed: {len(missed)}"
    )


@sync_app.command("status")
def sync_status(data: DataOpt = None) -> None:
    """Outbox size, watermarks and open conflicts."""
    from fhircare.bootstrap import build_container
    from fhircare.fhir.errors import StoreLocked
    from fhircare.remote.sync import status

    settings = _settings(data=data, seed_definitions=False)
    try:
        container = build_container(settings)
    except StoreLocked as exc:
        _fail(str(exc))
    try:
        sys.stdout.write(json.dumps(status(container.store), indent=2) + "\n")
    finally:
        container.close()


@sync_app.command("resolve")
def sync_resolve(
    reference: Annotated[str, typer.Argument(help="Type/id of a flagged conflict")],
    keep: Annotated[str, typer.Option(help="local or remote")] = "local",
    data: DataOpt = None,
    hapi_url: HapiOpt = None,
) -> None:
    """Close a flagged sync conflict, keeping the local or the remote version."""
    from fhircare.fhir.errors import FhirError
    from fhircare.remote.sync import resolve

    if keep not in ("local", "remote") or reference.count("/") != 1:
        _fail("usage: fhircare sync resolve Type/id --keep local|remote")
    _, container, client = _sync_setup(data, hapi_url)
    rtype, rid = reference.split("/")
    try:
        resolve(container.store, client, rtype, rid, keep)  # type: ignore[arg-type]
    except FhirError as exc:
        _fail(exc.diagnostics)
    finally:
        client.close()
        container.close()
    console.print(f"{reference}: kept the {keep} version")


@sync_app.command("subscribe")
def sync_subscribe(
    endpoint: Annotated[
        str, typer.Option(help="fhircare's webhook base, e.g. http://host:8000/events/hapi")
    ],
    criteria: Annotated[str, typer.Option(help="Subscription criteria")] = (
        "Encounter?status=finished"
    ),
    hapi_url: HapiOpt = None,
) -> None:
    """Register a rest-hook Subscription on HAPI so its discharges reach fhircare."""
    from fhircare.fhir.errors import FhirError
    from fhircare.remote.factory import remote_client
    from fhircare.remote.sync import subscribe

    settings = _settings(hapi_url=hapi_url)
    if not settings.hapi_url:
        _fail("no HAPI server: set FHIRCARE_HAPI_URL or pass --hapi-url")
    client = remote_client(settings)
    header = f"Authorization: Bearer {settings.webhook_secret}" if settings.webhook_secret else None
    try:
        sub = subscribe(client, criteria=criteria, endpoint=endpoint, header=header)
    except FhirError as exc:
        _fail(f"could not subscribe: {exc.diagnostics}", 1)
    finally:
        client.close()
    console.print(f"Subscription/{sub['id']} is {sub.get('status')}: {criteria} -> {endpoint}")


def load_json_file(path: Path) -> Any:
    """Read a JSON file or exit 2 with a clear message."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        _fail(f"{path}: no such file")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(f"{path}: not valid JSON ({exc})")


def main() -> None:  # pragma: no cover - console entry for `python -m fhircare`
    app(prog_name="fhircare")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
