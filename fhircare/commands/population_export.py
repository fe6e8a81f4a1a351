"""`fhircare population export`: pull a Bulk Data export into a directory of ndjson files.

`--source` is a FHIR base URL, `fhircare` (this configuration's own server, as `serve`
runs it) or `hapi` (FHIRCARE_HAPI_URL, with the FHIRCARE_REMOTE_* backend-services
credentials when set). Bad input is one line and exit 2; an export the server refuses or
that fails is one line and exit 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def _source(source: str) -> tuple[str, object | None]:
    """(base URL, httpx auth) of `--source`."""
    from pydantic import ValidationError

    from fhircare.config import Settings, config_errors

    if source.startswith(("http://", "https://")):
        return source.rstrip("/"), None
    if source not in ("fhircare", "hapi"):
        _fail(f"--source must be a FHIR base URL (http://...), fhircare or hapi, not {source!r}", 2)
    try:
        settings = Settings()
    except ValidationError as exc:
        _fail(config_errors(exc)[0], 2)
        raise  # unreachable
    if source == "fhircare":
        return settings.public_base(), None
    if not settings.hapi_url:
        _fail("--source hapi needs FHIRCARE_HAPI_URL", 2)
    from fhircare.remote.factory import remote_auth

    return str(settings.hapi_url).rstrip("/"), remote_auth(settings)


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        source: Annotated[
            str, typer.Option("--source", help="FHIR base URL, 'fhircare' or 'hapi'")
        ],
        out: Annotated[Path, typer.Option("--out", help="Directory for the ndjson files")],
        types: Annotated[
            list[str] | None,
            typer.Option("--type", help="Resource type to export (repeat, or comma-separated)"),
        ] = None,
        since: Annotated[
            str | None,
            typer.Option("--since", help="Only resources changed since this FHIR instant"),
        ] = None,
        group: Annotated[
            str | None, typer.Option("--group", help="Export this Group's members only")
        ] = None,
        patients: Annotated[
            bool, typer.Option("--patients", help="Patient-level export (Patient/$export)")
        ] = False,
        timeout: Annotated[
            float, typer.Option("--timeout", help="Seconds to wait for the export")
        ] = 3600.0,
    ) -> None:
        """Pull a Bulk Data export ($export) into --out, with a progress bar."""
        from fhircare.fhir.errors import FhirError
        from fhircare.population.bulk_pull import BulkExportError, pull_export
        from fhircare.population.bulk_request import parse_instant

        names = [t.strip() for v in types or [] for t in v.split(",") if t.strip()]
        from fhircare.fhir import registry

        unknown = [t for t in names if not registry.is_resource_type(t)]
        if unknown:
            _fail(f"--type: unknown resource type {unknown[0]!r}", 2)
        if since is not None:
            try:
                parse_instant(since)
            except FhirError as exc:
                _fail(f"--since: {exc.diagnostics}", 2)
        if out.exists() and not out.is_dir():
            _fail(f"--out {out} is a file, not a directory", 2)
        if group and patients:
            _fail("--group and --patients exclude each other", 2)
        base, auth = _source(source)
        level = "group" if group else "patient" if patients else "system"
        with Progress(
            TextColumn("[bold]$export[/]"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("kick-off", total=1.0)

            def on_progress(message: str, fraction: float | None) -> None:
                bar.update(task, description=escape(message), completed=fraction or 0.0)

            try:
                paths = pull_export(
                    base,
                    out,
                    level=level,
                    group_id=group,
                    types=names or None,
                    since=since,
                    auth=auth,  # type: ignore[arg-type]
                    on_progress=on_progress,
                    timeout=timeout,
                )
            except BulkExportError as exc:
                bar.stop()
                _fail(str(exc), 1)
                return
        total = sum(1 for p in paths for _ in p.open("rb"))
        console.print(f"exported {total} resources in {len(paths)} files to {out}")
        for path in paths:
            console.print(f"  {path.name}")
