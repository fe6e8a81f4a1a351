"""`fhircare terminology`: the local RxNorm index that reconciliation reads before the
built-in drug table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    help="Drug terminology: a local RxNorm index reconciliation reads first.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Data folder the index goes in (FHIRCARE_DATA)")
]


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def _data_dir(data: Path | None) -> Path:
    from pydantic import ValidationError

    from fhircare.config import Settings

    try:
        return Settings(**({"data": data} if data is not None else {})).data
    except ValidationError as exc:
        _fail(f"configuration: {exc.errors()[0].get('msg', exc)}")
    raise AssertionError("unreachable")


@app.command("load-rxnorm")
def load_rxnorm(
    folder: Annotated[
        Path,
        typer.Argument(help="An unpacked RxNorm release (RXNCONSO, RXNREL and RXNSAT .RRF)"),
    ],
    data: DataOpt = None,
) -> None:
    """Index an RxNorm release (full or Current Prescribable Content) into the data folder."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    from fhircare.terminology.rrf import Release, RrfError
    from fhircare.terminology.rxnorm import build_index, index_path

    target = index_path(_data_dir(data))
    try:
        release = Release.find(folder)
    except RrfError as exc:
        _fail(str(exc))
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err,
    )
    task = bar.add_task("reading RxNorm", total=release.total_bytes())
    try:
        with bar:
            counts = build_index(release, target, advance=lambda n: bar.advance(task, n))
    except (RrfError, OSError) as exc:
        target.with_name(target.name + ".tmp").unlink(missing_ok=True)
        _fail(str(exc))
    summary = ", ".join(f"{counts.get(t, 0)} {t}" for t in ("IN", "PIN", "BN", "SCD", "SBD"))
    console.print(f"RxNorm index written to {target}: {summary}")


@app.command()
def status(data: DataOpt = None) -> None:
    """Say whether a local RxNorm index is in the data folder, and what it holds."""
    from fhircare.terminology.rxnorm import index_path, open_local_index

    data_dir = _data_dir(data)
    try:
        index = open_local_index(data_dir)
    except ValueError as exc:
        _fail(str(exc))
    if index is None:
        console.print(f"no RxNorm index in {index_path(data_dir)}: the built-in drug table only")
        return
    try:
        counts = {k[6:]: v for k, v in index.meta.items() if k.startswith("count.")}
        console.print(
            f"RxNorm index {index.path} (built {index.meta.get('built')}): "
            + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        )
    finally:
        index.close()
