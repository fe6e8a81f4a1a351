"""Panel-wide case finding, resumable: ingest -> facts (Spark) -> decide -> write-back.

Each stage leaves its output and a checkpoint (`checkpoints/<stage>.json`) in the output
folder; a rerun with the same folder skips every finished stage and write-back batch. The
clock of the first run is kept in the checkpoints, so a resumed run decides as of the same
instant.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fhircare.care.common import fhir_datetime, utcnow
from fhircare.fhir.datetimes import parse_datetime
from fhircare.population.rules import case_finding, decide
from fhircare.store.base import Store

Progress = Callable[[str, int, int | None], None]  # stage, done, total


@dataclass
class RunReport:
    out_dir: Path
    now: str
    counts: dict[str, int] = field(default_factory=dict)  # resources per type
    bad_lines: list[str] = field(default_factory=list)
    tiers: dict[str, int] = field(default_factory=dict)
    patients: int = 0
    skipped: list[str] = field(default_factory=list)  # stages resumed from a checkpoint
    written: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage run now (wall)


class Checkpoints:
    """checkpoints/<name>.json in the output folder: a stage is done when its file exists."""

    def __init__(self, out_dir: Path) -> None:
        self.folder = out_dir / "checkpoints"
        self.folder.mkdir(parents=True, exist_ok=True)

    def get(self, name: str) -> dict[str, Any] | None:
        path = self.folder / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, name: str, data: dict[str, Any]) -> None:
        tmp = self.folder / f".{name}.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.folder / f"{name}.json")


def _noop(stage: str, done: int, total: int | None) -> None:
    return None


def run_facts(
    spark: Any,
    source: Path,
    out_dir: Path,
    *,
    now: datetime,
    progress: Progress,
    report: RunReport,
    marks: Checkpoints,
) -> None:
    """Stages ingest and facts (Spark). The export is parsed once into memory; ingest's
    checkpoint keeps its counts and malformed lines, so a run resumed before the facts
    parses the export again (no staging copy on disk) without repeating that check."""
    from fhircare.population import ingest
    from fhircare.population.schema import schema_for

    done = marks.get("ingest")
    facts_done = marks.get("facts") is not None
    if done is not None:
        report.skipped.append("ingest")
    if done is not None and facts_done:
        _report_ingest(report, done)
        report.skipped.append("facts")
        return
    start = time.perf_counter()
    cf = case_finding()
    by_type: dict[str, list[Any]] = {}
    for view in [cf.panel, *cf.views.values()]:
        by_type.setdefault(view.resource, []).append(view)
    schemas = {t: schema_for(views) for t, views in by_type.items()}
    parsed = ingest.parse_export(spark, source, schemas)
    # the facts' query is planned (many driver calls) while Spark reads the export
    pool = ThreadPoolExecutor(max_workers=1)
    planned = None if facts_done else pool.submit(_plan_facts, spark, parsed, cf, now)
    try:
        if done is None:
            progress("ingest", 0, None)
            counts = ingest.type_counts(parsed)
            bad = [str(b) for b in ingest.bad_lines(parsed)] if counts.get(ingest.MALFORMED) else []
            done = {"counts": counts, "bad_lines": bad}
            marks.put("ingest", done)
            report.seconds["ingest"] = time.perf_counter() - start
            progress("ingest", 1, 1)
        _report_ingest(report, done)
        if planned is None:
            report.skipped.append("facts")
            return
        start = time.perf_counter()
        progress("facts", 0, None)
        facts, views = planned.result()
        facts.write.mode("overwrite").json(str(out_dir / "facts"))
        for frame in views:
            frame.unpersist()
        marks.put("facts", {"at": fhir_datetime(now)})
        report.seconds["facts"] = time.perf_counter() - start
        progress("facts", 1, 1)
    finally:
        pool.shutdown(wait=True)
        if parsed is not None:
            parsed.unpersist()


def _report_ingest(report: RunReport, done: dict[str, Any]) -> None:
    from fhircare.population.ingest import MALFORMED

    report.counts = {k: v for k, v in done["counts"].items() if k != MALFORMED}
    report.bad_lines = done["bad_lines"]


def _plan_facts(spark: Any, parsed: Any, cf: Any, now: datetime) -> tuple[Any, list[Any]]:
    """The facts' DataFrame (one row per Patient) over the parsed export, and the views it
    keeps in memory (read by several facts) to release after it is written."""
    from pyspark import StorageLevel

    from fhircare.population import ingest
    from fhircare.population.spark_rules import facts_frame
    from fhircare.population.spark_views import empty_view_frame, view_frame

    frames: dict[str, Any] = {}
    uses = Counter([cf.panel.id, *(fact.view for fact in cf.facts)])

    def frame_of(view_id: str) -> Any:
        if view_id not in frames:
            view = cf.panel if view_id == cf.panel.id else cf.views[view_id]
            resources = ingest.type_frame(parsed, view.resource)
            frame = (
                empty_view_frame(spark, view) if resources is None else view_frame(view, resources)
            )
            if uses[view_id] > 1:  # a view read by several facts is computed once
                frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
            frames[view_id] = frame
        return frames[view_id]

    facts = facts_frame(frame_of(cf.panel.id), frame_of, now=now, definitions=cf)
    return facts, [f for f in frames.values() if f.is_cached]


def _fact_rows(folder: Path) -> Iterator[dict[str, Any]]:
    for part in sorted(folder.glob("part-*")):
        with part.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def result_of(patient: str, facts: dict[str, Any]) -> dict[str, Any]:
    """The answer of one patient as /care/eligibility gives it."""
    e = decide(patient, facts)
    return {
        "patient": e.patient,
        "ccmEligible": e.ccm_eligible,
        "highRisk": e.high_risk,
        "tier": e.tier,
        "chronicConditions": e.chronic_conditions,
        "behavioural": e.behavioural,
        "reasons": e.reasons,
    }


def run_decide(out_dir: Path, *, progress: Progress, report: RunReport, marks: Checkpoints) -> None:
    """Stage decide: results.ndjson, one answer per patient, from the facts."""
    done = marks.get("decide")
    if done is None:
        progress("decide", 0, None)
        tiers: dict[str, int] = {}
        n = 0
        tmp = out_dir / ".results.ndjson.tmp"
        with tmp.open("w", encoding="utf-8") as fh:
            for row in _fact_rows(out_dir / "facts"):
                patient = row.pop("patient")
                result = result_of(patient, row)
                tiers[result["tier"]] = tiers.get(result["tier"], 0) + 1
                fh.write(json.dumps(result) + "\n")
                n += 1
                if n % 5000 == 0:
                    progress("decide", n, None)
        tmp.replace(out_dir / "results.ndjson")
        done = {"patients": n, "tiers": tiers}
        marks.put("decide", done)
        progress("decide", n, n)
    else:
        report.skipped.append("decide")
    report.patients = done["patients"]
    report.tiers = done["tiers"]


def results(out_dir: Path) -> Iterator[dict[str, Any]]:
    with (out_dir / "results.ndjson").open(encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def run_writeback(
    store: Store,
    out_dir: Path,
    *,
    tasks: bool,
    owner: str | None,
    now: datetime,
    batch_size: int,
    progress: Progress,
    report: RunReport,
    marks: Checkpoints,
) -> None:
    """Stage write-back: Flags/Tasks in batches (one checkpoint each), then the Groups."""
    from fhircare.population import writeback

    total = report.patients
    written = {"flags": 0, "tasks": 0, "tasks_kept": 0, "groups": 0}
    for i, batch in enumerate(writeback.batches(results(out_dir), batch_size)):
        name = f"writeback-{'tasks-' if tasks else ''}{i:06d}"
        done = marks.get(name)
        if done is None:
            ops, counts = writeback.patient_ops(store, batch, tasks=tasks, owner=owner, now=now)
            if ops:
                store.commit(ops)
            done = {"flags": counts.flags, "tasks": counts.tasks, "tasks_kept": counts.tasks_kept}
            marks.put(name, done)
        for k, v in done.items():
            written[k] += v
        progress("write-back", min((i + 1) * batch_size, total), total)
    if marks.get("writeback-groups") is None:
        ops = writeback.group_ops(results(out_dir), now=now)
        store.commit(ops)
        marks.put("writeback-groups", {"groups": len(ops)})
    else:
        report.skipped.append("writeback-groups")
    written["groups"] = marks.get("writeback-groups")["groups"]  # type: ignore[index]
    report.written = written


def stratify(
    spark: Any,
    source: Path,
    out_dir: Path,
    *,
    store: Store | None = None,
    tasks: bool = False,
    owner: str | None = None,
    now: datetime | None = None,
    batch_size: int = 500,
    progress: Progress = _noop,
) -> RunReport:
    """Run (or resume) case finding over the ndjson export in `source`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    marks = Checkpoints(out_dir)
    run = marks.get("run")
    if run is None:
        run = {"now": fhir_datetime(utcnow(now)), "source": str(source)}
        marks.put("run", run)
    at = parse_datetime(run["now"])
    report = RunReport(out_dir=out_dir, now=run["now"])
    run_facts(spark, source, out_dir, now=at, progress=progress, report=report, marks=marks)
    start = time.perf_counter()
    run_decide(out_dir, progress=progress, report=report, marks=marks)
    if "decide" not in report.skipped:
        report.seconds["decide"] = time.perf_counter() - start
    if store is not None:
        start = time.perf_counter()
        run_writeback(
            store,
            out_dir,
            tasks=tasks,
            owner=owner,
            now=at,
            batch_size=batch_size,
            progress=progress,
            report=report,
            marks=marks,
        )
        report.seconds["write-back"] = time.perf_counter() - start
    return report
