"""`fhircare population stratify`: panel-wide case finding on Spark, resumable, with
progress, and the write-back of Groups, Flags and enrolment Tasks."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def _now(text: str | None) -> datetime | None:
    if text is None:
        return None
    from fhircare.fhir.datetimes import parse_datetime

    try:
        return parse_datetime(text)
    except ValueError:
        _fail(f"--now {text!r}: not a FHIR dateTime (e.g. 2025-03-01T12:00:00Z)")
    return None


def _settings(data: Path | None) -> Any:
    from pydantic import ValidationError

    from fhircare.config import Settings

    try:
        return Settings(**({"data": data} if data is not None else {}))
    except ValidationError as exc:
        _fail(f"configuration: {exc.errors()[0].get('msg', exc)}")


def _remote(base: str) -> Any:
    from fhircare.remote.client import FhirClient
    from fhircare.store.remote import RemoteStore

    return RemoteStore(FhirClient(base.rstrip("/")))


def _pull(url: str, export: Path, auth: Any = None) -> list[Path]:
    from fhircare.population.sources import pull

    with console.status(f"Bulk Data export from {url}") as status:

        def progress(message: str, fraction: float | None) -> None:
            done = f" ({fraction:.0%})" if fraction is not None else ""
            status.update(f"Bulk Data export from {url}: {message}{done}")

        return pull(url, export, auth=auth, on_progress=progress)


def _source_folder(source: str, base: str | None, out: Path, settings: Any) -> Path:
    """The folder of ndjson stratify reads: DIR itself, or an export made into out/export
    (pulled with `$export` from --base / FHIRCARE_HAPI_URL / the running fhircare, or
    read straight from the embedded store when no server holds it)."""
    if source not in ("fhircare", "hapi"):
        folder = Path(source)
        if not folder.is_dir():
            _fail(f"--source {source}: not a folder of .ndjson files (nor fhircare, hapi)")
        return folder
    from fhircare.population.sources import SourceProblem, dump_store
    from fhircare.population.stratify import Checkpoints

    export = out / "export"
    marks = Checkpoints(out)
    if marks.get("export") is not None:
        return export
    try:
        if source == "hapi":
            url = base or (str(settings.hapi_url) if settings.hapi_url else None)
            if not url:
                _fail("--source hapi needs --base URL (or FHIRCARE_HAPI_URL)")
            from fhircare.remote.factory import remote_auth

            files = _pull(url.rstrip("/"), export, remote_auth(settings) if not base else None)
            marks.put("export", {"base": url, "files": [str(f) for f in files]})
        elif base:
            files = _pull(base.rstrip("/"), export)
            marks.put("export", {"base": base, "files": [str(f) for f in files]})
        else:
            from fhircare.bootstrap import open_store
            from fhircare.fhir.errors import StoreLocked

            try:
                store = open_store(settings)
            except StoreLocked:  # a running fhircare holds the store: ask it for $export
                url = settings.public_base()
                files = _pull(url, export)
                marks.put("export", {"base": url, "files": [str(f) for f in files]})
                return export
            try:
                counts = dump_store(store, export)
            finally:
                store.close()
            marks.put("export", {"data": str(settings.data), "counts": counts})
    except SourceProblem as exc:
        _fail(str(exc), 1)
    return export


def _target(source: str, base: str | None, settings: Any) -> Any:
    if base:
        return _remote(base)
    if source == "hapi" and settings.hapi_url:
        return _remote(str(settings.hapi_url))
    from fhircare.bootstrap import open_store
    from fhircare.fhir.errors import StoreLocked

    try:
        return open_store(settings)
    except StoreLocked as exc:
        _fail(f"{exc}; pass --base http://HOST:PORT/fhir to write back through the server")


def register(app: typer.Typer) -> None:
    """Add `stratify` to the population group."""

    @app.command()
    def stratify(
        source: Annotated[
            str,
            typer.Option(
                "--source", help="fhircare, hapi, or a folder of .ndjson / .ndjson.gz files"
            ),
        ],
        base: Annotated[
            str | None,
            typer.Option("--base", help="FHIR base URL of the source server (and write-back)"),
        ] = None,
        out: Annotated[
            Path,
            typer.Option("--out", help="Output folder: results, checkpoints (a rerun resumes)"),
        ] = Path("population-run"),
        write_back: Annotated[
            bool, typer.Option("--write-back", help="Write Groups and Flags back")
        ] = False,
        tasks: Annotated[
            bool, typer.Option("--tasks", help="With --write-back: enrolment Tasks too")
        ] = False,
        spark_master: Annotated[
            str | None,
            typer.Option(
                "--spark-master",
                help="Spark master URL (default: spark.master of the Spark settings, or local[*])",
            ),
        ] = None,
        owner: Annotated[
            str | None,
            typer.Option("--owner", help="Owner of the enrolment Tasks, e.g. CareTeam/ccm"),
        ] = None,
        now: Annotated[
            str | None, typer.Option("--now", help="Decide as of this dateTime (default: now)")
        ] = None,
        data: Annotated[
            Path | None, typer.Option("--data", help="Embedded store folder (FHIRCARE_DATA)")
        ] = None,
        class_archive: Annotated[
            bool | None,
            typer.Option(
                "--class-archive/--no-class-archive",
                help="A local Spark keeps (or uses) its JVM class-data archive in the user's"
                " cache, ~170 MB (default: FHIRCARE_SPARK_CLASS_ARCHIVE, on)",
            ),
        ] = None,
    ) -> None:
        """Find who needs care management in a whole panel: CCM eligibility, risk tiers,
        recent discharges, unmet social needs (mappings/case-finding.yaml), on Spark."""
        from fhircare.population.session import (
            SparkUnavailable,
            java_problem,
            spark_session,
            stop_spark,
        )

        if tasks and not write_back:
            _fail("--tasks needs --write-back")
        if owner is not None and not re.fullmatch(r"[A-Z][A-Za-z]+/[A-Za-z0-9.-]{1,64}", owner):
            _fail(f"--owner {owner!r}: not a reference such as CareTeam/ccm")
        at = _now(now)
        problem = java_problem()
        if problem:
            _fail(problem)
        settings = _settings(data)
        folder = _source_folder(source, base, out, settings)
        try:
            with console.status("starting Spark"):
                archive = settings.spark_class_archive if class_archive is None else class_archive
                spark = spark_session(spark_master, class_archive=archive)
        except SparkUnavailable as exc:
            _fail(str(exc))
        from fhircare.fhir.errors import FhirError

        try:
            target = _target(source, base, settings) if write_back else None
            try:
                report = _run(spark, folder, out, target, tasks, owner, at)
            except FhirError as exc:  # the target refused a write: the rerun resumes there
                _fail(f"write-back stopped: {exc.diagnostics}", 1)
            finally:
                if target is not None:
                    target.close()
            _print(report)
        finally:
            stop_spark(spark)


def _run(
    spark: Any, folder: Path, out: Path, target: Any, tasks: bool, owner: str | None, at: Any
) -> Any:
    from fhircare.population.stratify import stratify as run_stratify

    columns = (
        TextColumn("{task.description:<11}"),
        BarColumn(),
        TextColumn("{task.completed:>8,.0f}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        ids: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int | None) -> None:
            if stage not in ids:
                ids[stage] = bar.add_task(stage, total=total)
            bar.update(ids[stage], completed=done, total=total)

        return run_stratify(
            spark, folder, out, store=target, tasks=tasks, now=at, progress=progress
        )


def _print(report: Any) -> None:
    for line in report.bad_lines[:20]:
        err.print(f"[yellow]skipped[/] {escape(line)}", soft_wrap=True, highlight=False)
    if len(report.bad_lines) > 20:
        err.print(f"[yellow]skipped[/] {len(report.bad_lines) - 20} more malformed lines")
    if report.skipped:
        console.print(f"resumed: {', '.join(report.skipped)} already done in {report.out_dir}")
    tiers = ", ".join(f"{t} {report.tiers.get(t, 0):,}" for t in ("high", "moderate", "low"))
    console.print(
        f"Case finding of {report.patients:,} patients as of {report.now}: {tiers}",
        soft_wrap=True,
    )
    resources = ", ".join(f"{k} {v:,}" for k, v in sorted(report.counts.items())) or "nothing"
    console.print(
        f"read: {resources}; malformed lines skipped: {len(report.bad_lines)}", soft_wrap=True
    )
    if report.written:
        w = report.written
        console.print(
            f"written: {w['groups']} Groups, {w['flags']:,} Flags, {w['tasks']:,} Tasks"
            + (
                f" ({w['tasks_kept']:,} Tasks already there, left as they are)"
                if w["tasks_kept"]
                else ""
            ),
            soft_wrap=True,
        )
    if report.seconds:
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
        console.print(f"stages: {stages}", soft_wrap=True)
    console.print(f"results: {report.out_dir / 'results.ndjson'}", soft_wrap=True)
