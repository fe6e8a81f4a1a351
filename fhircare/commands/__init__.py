"""CLI command groups, each a `typer.Typer()` named `app`, registered in `fhircare.cli`."""
