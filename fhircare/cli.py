"""The `fhircare` command (typer + rich)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fhircare.commands import sync as sync_commands
from fhircare.config import Settings

app = typer.Typer(
    help="fhircare: care management on FHIR R4 (care plans, goals, tasks, transitions of care).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(sync_commands.app, name="sync")

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
