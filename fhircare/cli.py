"""The `fhircare` command (typer + rich)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from fhircare import __version__
from fhircare.config import Settings, config_errors

app = typer.Typer(
    help="fhircare: care management on FHIR R4 (care plans, goals, tasks, transitions of care).",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
sync_app = typer.Typer(help="Two-way sync with a HAPI FHIR server.", no_args_is_help=True)
app.add_typer(sync_app, name="sync")

console = Console()
err = Console(stderr=True)
log = logging.getLogger("fhircare")

DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Data folder of the embedded store (FHIRCARE_DATA)")
]


def _logging(settings: Settings) -> None:
    from fhircare.observability.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)


def _version(value: bool) -> None:
    if value:
        console.print(f"fhircare {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """fhircare: care management on FHIR R4 (care plans, goals, tasks, transitions of care)."""


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment and the command's options; each problem is one line
    on stderr and exit code 2."""
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**values)
    except ValidationError as exc:
        for line in config_errors(exc):
            err.print(f"[bold red]error:[/] {line}", soft_wrap=True, markup=True, highlight=False)
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (FHIRCARE_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (FHIRCARE_PORT)")] = None,
    data: DataOpt = None,
) -> None:
    """Serve the FHIR API (/fhir), operations and event intake (and MLLP when
    FHIRCARE_MLLP_PORT is set)."""
    import uvicorn

    from fhircare.api.app import create_app
    from fhircare.commands.running import announce
    from fhircare.fhir.errors import StoreLocked

    settings = _settings(host=host, port=port, data=data)
    _logging(settings)
    loopback = settings.host in ("127.0.0.1", "localhost", "::1")
    if settings.auth == "none" and not loopback and not settings.allow_unauthenticated_remote:
        log.warning(
            "FHIRCARE_AUTH=none: refusing to bind %s; binding 127.0.0.1 "
            "(set FHIRCARE_AUTH=smart to serve other hosts)",
            settings.host,
        )
        settings.host = "127.0.0.1"
    try:
        application = create_app(settings)
    except StoreLocked as exc:
        _fail(str(exc))
    mode = "no authentication (local use only)" if settings.auth == "none" else "SMART on FHIR"
    log.info(
        "fhircare %s serving http://%s:%d/fhir (store: %s, data: %s, auth: %s)",
        __version__,
        settings.host,
        settings.port,
        settings.store,
        settings.data,
        mode,
    )
    with announce(settings):
        uvicorn.run(
            application,
            host=settings.host,
            port=settings.port,
            log_config=None,  # fhircare's logging (FHIRCARE_LOG_LEVEL, FHIRCARE_LOG_FORMAT)
            access_log=False,  # fhircare writes its own access line (route templates)
        )


@app.command()
def demo(
    data: DataOpt = None,
    server: Annotated[
        str | None,
        typer.Option("--server", help="A running fhircare, e.g. http://127.0.0.1:8000"),
    ] = None,
) -> None:
    """Run the whole care-management cycle on a sample patient and print what it made."""
    import httpx

    from fhircare.commands.demo import DemoError, local_client, run_demo
    from fhircare.commands.running import running_server
    from fhircare.fhir.errors import StoreLocked

    settings = _settings(data=data)
    if server is None:
        try:
            with local_client(settings) as client:
                report = run_demo(client)
        except StoreLocked as exc:
            server = running_server(settings.data)
            if server is None:
                _fail(str(exc))
        except DemoError as exc:
            _fail(str(exc), 1)
        else:
            _print_demo(report, settings.public_base(), f"`fhircare serve --data {settings.data}`")
            return
    root = str(server).rstrip("/").removesuffix("/fhir")
    try:
        with httpx.Client(base_url=root, timeout=60) as client:
            report = run_demo(client)
    except httpx.HTTPError as exc:
        _fail(f"{root}: {exc}")
    except DemoError as exc:
        _fail(str(exc), 1)
    _print_demo(report, f"{root}/fhir", None)


def _print_demo(report: Any, base: str, serve_hint: str | None) -> None:
    from rich.table import Table

    if report.already_ran:
        console.print(
            "[yellow]The demo already ran here[/] (Patient/demo-patient has its care plan); "
            "nothing was written. What it made:",
            soft_wrap=True,
        )
    else:
        console.rule("[bold]fhircare demo: care-management cycle")
        for line in report.steps:
            console.print(f"- {line}", soft_wrap=True)
        if report.worklist:
            title = f"Worklist of Practitioner/demo-care-manager ({len(report.worklist)} open)"
            table = Table(title=title)
            for col in ("due", "task", "why"):
                table.add_column(col)
            for item in report.worklist[:8]:
                due = (item.get("due") or "-")[:10]
                table.add_row(due, item.get("title", ""), item.get("reason", ""))
            console.print(table)
        console.print(f"[green]{len(report.made)} resources made[/] (type/id, and how to read it):")
    for ref in report.made:
        console.print(f"  {ref:<58} curl -s {base}/{ref}", soft_wrap=True, highlight=False)
    if serve_hint:
        console.print(f"(read them with {serve_hint} running)", soft_wrap=True)


@app.command()
def reconcile(
    bundle: Annotated[Path, typer.Argument(help="Bundle with Patient, Encounter, medications")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Reconcile a discharge's medication lists from a FHIR Bundle file."""
    from fhircare.fhir.errors import FhirError
    from fhircare.fhir.validation import validate_resource
    from fhircare.transitions.reconcile_cli import render_table, run_reconcile

    data = load_json_file(bundle)
    try:
        validate_resource(data, "Bundle")  # a malformed Bundle is refused, never reconciled
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
    """Listen for HL7 v2 ADT messages over MLLP only; reply with ACKs (AA, AE, AR).
    (`serve` with FHIRCARE_MLLP_PORT does this next to the REST API, on one store.)"""
    import asyncio

    from fhircare.bootstrap import build_container
    from fhircare.fhir.errors import StoreLocked
    from fhircare.listener import start_mllp
    from fhircare.services.intake import Hl7Intake

    settings = _settings(data=data)
    _logging(settings)
    try:
        container = build_container(settings)
    except StoreLocked as exc:
        _fail(f"{exc} (set FHIRCARE_MLLP_PORT for `fhircare serve` to listen there)")
    intake = Hl7Intake(container.bundles, default_tz=settings.default_tz)

    async def main() -> None:
        server = await start_mllp(intake, host, port, allowed=settings.mllp_allowed)
        log.info("fhircare MLLP listening on %s:%d (data: %s)", host, port, settings.data)
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
                container.store, encounter, care_manager=settings.care_manager
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
        sys.stdout.write(json.dumps(_ask_server(settings, "/sync/status", exc), indent=2) + "\n")
        return
    try:
        sys.stdout.write(json.dumps(status(container.store), indent=2) + "\n")
    finally:
        container.close()


def _ask_server(settings: Settings, path: str, locked: Exception) -> Any:
    """GET `path` from the `fhircare serve` that holds the data folder (read-only
    commands work while it runs)."""
    import httpx

    from fhircare.commands.running import running_server

    url = running_server(settings.data)
    if url is None:
        _fail(str(locked))
    try:
        response = httpx.get(f"{url}{path}", timeout=30)
    except httpx.HTTPError as exc:
        _fail(f"the data folder is held by `fhircare serve` at {url}, which did not answer ({exc})")
    if response.status_code != 200:
        _fail(f"`fhircare serve` at {url} answered {response.status_code} to {path}")
    return response.json()


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
    except IsADirectoryError:
        _fail(f"{path}: is a directory, not a JSON file")
    except OSError as exc:
        _fail(f"{path}: cannot be read ({exc.strerror or exc})")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(f"{path}: not valid JSON ({exc})")


def main() -> None:  # pragma: no cover - console entry for `python -m fhircare`
    app(prog_name="fhircare")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
