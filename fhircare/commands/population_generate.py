"""`fhircare population generate`: a synthetic panel as Bulk Data ndjson."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add `generate` to the population group."""

    @app.command()
    def generate(
        out: Annotated[Path, typer.Argument(help="Folder for <Type>.ndjson files")],
        patients: Annotated[int, typer.Option("--patients", min=1, help="Panel size")] = 1000,
        seed: Annotated[int, typer.Option("--seed", help="Same seed, same panel")] = 1,
        as_of: Annotated[
            str | None, typer.Option("--as-of", help="The panel's today (YYYY-MM-DD)")
        ] = None,
        gzip: Annotated[bool, typer.Option("--gzip", help="Write .ndjson.gz")] = False,
    ) -> None:
        """Write a synthetic, Synthea-like panel (Patients, Conditions, Encounters,
        Observations, MedicationRequests, QuestionnaireResponses) with real codes."""
        from fhircare.population.generate import generate as make_panel

        try:
            day = date.fromisoformat(as_of) if as_of else None
        except ValueError:
            err.print(f"[bold red]error:[/] --as-of {escape(as_of or '')}: not a date (YYYY-MM-DD)")
            raise typer.Exit(2) from None
        with console.status(f"generating {patients:,} patients"):
            panel = make_panel(out, patients, seed=seed, as_of=day, compress=gzip)
        counts = ", ".join(f"{k} {v:,}" for k, v in panel.counts.items())
        console.print(f"{out}: {counts} (as of {panel.as_of})", soft_wrap=True)
