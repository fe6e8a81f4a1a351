"""`fhircare population ...`: population-scale commands (Bulk Data export, case finding)."""

from __future__ import annotations

import typer

population_app = typer.Typer(
    help="Population scale: Bulk Data export and panel-wide case finding.", no_args_is_help=True
)
