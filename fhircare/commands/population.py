"""`fhircare population`: the typer group of the population-scale commands."""

from __future__ import annotations

import typer

population_app = typer.Typer(
    help="Population scale: Bulk Data export and panel-wide case finding on Spark.",
    no_args_is_help=True,
)
