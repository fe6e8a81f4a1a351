"""CLI command groups and the helpers commands share (each group: a `typer.Typer()` `app`)."""
