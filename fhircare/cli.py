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
    if settings.auth == "none" and settings.host not in ("127.0.0.1", "localhost", "::1"):
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
