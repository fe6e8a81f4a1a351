"""The `fhircare` command (typer + rich)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from fhircare import __version__
from fhircare.commands import (
    population_export,
    population_generate,
    population_stratify,
    terminology,
)
from fhircare.commands import sync as sync_commands
from fhircare.commands.population import population_app

if TYPE_CHECKING:  # imported where used: a command starts without what it does not need
    from fhircare.config import Settings

app = typer.Typer(
    help="fhircare: care management on FHIR R4 (care plans, goals, tasks, transitions of care).",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(sync_commands.app, name="sync")
app.add_typer(terminology.app, name="terminology")
population_export.register(population_app)
population_stratify.register(population_app)
population_generate.register(population_app)
app.add_typer(population_app, name="population")

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
    from pydantic import ValidationError

    from fhircare.config import Settings, config_errors

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
    server: Annotated[
        str | None,
        typer.Option(help="HTTP server: uvicorn or granian (FHIRCARE_SERVER)"),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes on one socket and store (FHIRCARE_WORKERS)"),
    ] = None,
) -> None:
    """Serve the FHIR API (/fhir), operations and event intake (and MLLP when
    FHIRCARE_MLLP_PORT is set)."""
    from fhircare.api.app import create_app
    from fhircare.commands.running import announce
    from fhircare.commands.serving import lean_log_records, server_options, tune_collector
    from fhircare.fhir.errors import StoreLocked

    settings = _settings(host=host, port=port, data=data, server=server, workers=workers)
    _logging(settings)
    lean_log_records()
    loopback = settings.host in ("127.0.0.1", "localhost", "::1")
    if settings.auth == "none" and not loopback and not settings.allow_unauthenticated_remote:
        log.warning(
            "FHIRCARE_AUTH=none: refusing to bind %s; binding 127.0.0.1 "
            "(set FHIRCARE_AUTH=smart to serve other hosts)",
            settings.host,
        )
        settings.host = "127.0.0.1"
    if settings.workers > 1:
        _serve_workers(settings)
        return
    try:
        application = create_app(settings)
    except StoreLocked as exc:
        _fail(str(exc))
    tune_collector()
    mode = "no authentication (local use only)" if settings.auth == "none" else "SMART on FHIR"
    log.info(
        "fhircare %s serving http://%s:%d/fhir (store: %s, data: %s, auth: %s, server: %s)",
        __version__,
        settings.host,
        settings.port,
        settings.store,
        settings.data,
        mode,
        settings.server,
    )
    with announce(settings):
        if settings.server == "granian":
            from fhircare.commands.granian_serving import serve_granian

            serve_granian(
                application,
                settings.host,
                settings.port,
                settings.max_header_bytes,
                settings.log_level,
            )
            return
        import uvicorn

        uvicorn.run(
            application,
            host=settings.host,
            port=settings.port,
            log_config=None,  # fhircare's logging (FHIRCARE_LOG_LEVEL, FHIRCARE_LOG_FORMAT)
            access_log=False,  # fhircare writes its own access line (route templates)
            **server_options(settings.max_header_bytes),
        )


def _serve_workers(settings: Settings) -> None:
    """`serve --workers N`: see fhircare.commands.worker_group."""
    import uvicorn

    from fhircare.api.app import create_app
    from fhircare.commands.running import announce
    from fhircare.commands.serving import server_options, tune_collector
    from fhircare.commands.worker_group import listening_sockets, run_group
    from fhircare.fhir.errors import StoreLocked
    from fhircare.store.journal import lock_folder

    def config(application: Any) -> uvicorn.Config:
        return uvicorn.Config(
            application,
            host=settings.host,
            port=settings.port,
            log_config=None,  # fhircare's logging (FHIRCARE_LOG_LEVEL, FHIRCARE_LOG_FORMAT)
            access_log=False,  # fhircare writes its own access line (route templates)
            **server_options(settings.max_header_bytes),
        )

    def worker(worker_settings: Settings, sock: Any) -> None:
        from fhircare.api.workers import GROUP_WORKERS, use_threads

        use_threads(GROUP_WORKERS)
        application = create_app(worker_settings)
        tune_collector()
        log.info("fhircare worker %d ready (pid %d)", worker_settings.worker_index, os.getpid())
        uvicorn.Server(config(application)).run(sockets=[sock])

    log.info(
        "fhircare %s serving http://%s:%d/fhir with %d workers (store: embedded, data: %s)",
        __version__,
        settings.host,
        settings.port,
        settings.workers,
        settings.data,
    )
    try:
        folder_lock = lock_folder(settings.data)  # the workers inherit it
    except StoreLocked as exc:
        _fail(str(exc))
    def bind(count: int) -> list[Any]:
        try:
            return listening_sockets(settings.host, settings.port, count)
        except OSError as exc:
            _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
            raise

    with folder_lock, announce(settings):
        code = run_group(settings, bind, worker)
    if code:
        raise typer.Exit(code)


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
                table.add_column(col, overflow="fold")
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
    _use_local_terminology(_settings().data)
    try:
        validate_resource(data, "Bundle")  # a malformed Bundle is refused, never reconciled
        result = run_reconcile(data)
    except FhirError as exc:
        _fail(f"{bundle}: {exc.diagnostics}")
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        console.print(render_table(result))


def _use_local_terminology(data_dir: Path) -> None:
    """Reconcile with the data folder's RxNorm index (`fhircare terminology load-rxnorm`)."""
    from fhircare.terminology.rxnorm import open_local_index
    from fhircare.transitions.medications import use_local_index

    try:
        use_local_index(open_local_index(data_dir))
    except ValueError as exc:
        err.print(f"[yellow]warning:[/] {escape(str(exc))}; using the built-in drug table")


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


def load_json_file(path: Path) -> Any:
    """Read a JSON file or exit 2 with a clear message."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        _fail(f"{path}: no such file")
    except IsADirectoryError:
        _fail(f"{path}: is a directory, not a JSON file")
    except OSError as exc:
        _fail(f"{path}: cannot be read ({exc.strerror or exc})")
    from fhircare.fhir import jsonio
    from fhircare.fhir.errors import BadRequest

    try:
        return jsonio.parse_json(raw)
    except BadRequest as exc:
        _fail(f"{path}: not valid JSON ({exc.diagnostics})")


def main() -> None:  # pragma: no cover - console entry for `python -m fhircare`
    app(prog_name="fhircare")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
