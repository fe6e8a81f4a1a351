"""The Spark session of the population commands: local `local[*]` by default, a cluster
through `--spark-master` or the standard Spark settings (SPARK_HOME/conf/spark-defaults.conf,
`spark.master` from spark-submit, PYSPARK_SUBMIT_ARGS) without code changes."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

# One short-lived JVM on a small machine: the JIT's quick tier only (the optimising tier
# spends more CPU compiling than a run of minutes gains back) and one GC thread.
LOCAL_SETTINGS = {
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}


# Settings of every session (a setting of the Spark settings wins). Case mappings through
# the JVM, not ICU: the first upper() over a string column (the chronic-condition codes)
# otherwise loads ICU's case tables, about a second per JVM; the codes are ASCII, where
# both give the same.
SESSION_SETTINGS = {
    "spark.sql.icu.caseMappings.enabled": "false",
}


# The driver JVM's class-data archive (AppCDS): the first run records the classes Spark
# loads into a file in the user's cache folder, later runs map them instead of loading and
# verifying some 20,000 classes again (about half the JVM start and first-query time).
# A stale or broken archive is ignored by the JVM (-Xshare:auto); its logs are off.
_CDS_QUIET = "-Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off"
_recording: dict[str, Path] = {}  # the archive this process records: {"tmp": .., "final": ..}


class SparkUnavailable(RuntimeError):
    """Spark cannot start here (no Java, or pyspark not installed): one line for the user."""


def java_problem() -> str | None:
    """Why Java cannot run Spark, or None when a `java` is found."""
    home = os.environ.get("JAVA_HOME")
    if home:
        if os.path.exists(os.path.join(home, "bin", "java")):
            return None
        return f"JAVA_HOME={home} has no bin/java; Spark needs Java 17, 21 or 25"
    if shutil.which("java") is None:
        return "Java not found (no `java` on PATH, JAVA_HOME unset); Spark needs Java 17, 21 or 25"
    return None


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    found = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return os.path.realpath(found) if found else None


def class_archive_path() -> Path | None:
    """Where the class-data archive of this Java and this pyspark lives (or will), in
    $XDG_CACHE_HOME/fhircare (~/.cache/fhircare); None without a Java."""
    import pyspark

    java = _java()
    if java is None:
        return None
    stamp = f"{java}:{os.stat(java).st_mtime_ns}:{pyspark.__file__}:{pyspark.__version__}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fhircare"
    return cache / f"spark-{pyspark.__version__}-{key}.jsa"


def _archive_option() -> str:
    """The JVM option that uses the archive, or records it when there is none yet."""
    final = class_archive_path()
    if final is None:
        return ""
    if final.is_file() and final.stat().st_size > 0:
        return f"-XX:SharedArchiveFile={final} {_CDS_QUIET}"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # no writable cache: run without
        return ""
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    _recording.update(tmp=tmp, final=final)
    return f"-XX:ArchiveClassesAtExit={tmp} {_CDS_QUIET}"


def stop_spark(session: Any) -> None:
    """When this process started the session recording the class-data archive: stop it, let
    the JVM exit (it writes the archive then), wait for it and keep the archive. Otherwise
    nothing: a session reused from the caller stays up, and the process's exit ends ours."""
    if not _recording:
        return
    session.stop()
    from pyspark import SparkContext

    tmp, final = _recording.pop("tmp"), _recording.pop("final")
    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None)
    try:
        if gateway is not None:
            gateway.shutdown()
            SparkContext._gateway = None
            SparkContext._jvm = None
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()  # the gateway JVM exits at the end of its stdin
            proc.wait(timeout=120)
        if tmp.is_file() and tmp.stat().st_size > 0:
            tmp.replace(final)
    except Exception:  # noqa: BLE001 - the archive only speeds the next run up
        pass
    finally:
        tmp.unlink(missing_ok=True)


def spark_session(
    master: str | None = None,
    *,
    shuffle_partitions: int | None = None,
    app_name: str = "fhircare",
    class_archive: bool = False,
) -> Any:
    """A SparkSession (pyspark's getOrCreate: reused when one runs in this process).

    `master` wins over the standard settings; without either, `local[*]`. With
    `class_archive`, a local driver JVM uses (or records) the class-data archive; stop such
    a session with `stop_spark`.
    """
    problem = java_problem()
    if problem:
        raise SparkUnavailable(problem)
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailable(
            "pyspark is not installed: pip install 'fhircare[population]'"
        ) from None
    builder = SparkSession.builder.appName(app_name)
    from pyspark import SparkConf

    conf = SparkConf()  # spark-defaults / spark-submit settings, when any
    if master:
        builder = builder.master(master)
    elif not conf.contains("spark.master"):
        builder = builder.master("local[*]")
    builder = builder.config("spark.sql.session.timeZone", "UTC")
    defaults = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        **SESSION_SETTINGS,
    }
    for key, value in defaults.items():
        if not conf.contains(key):
            builder = builder.config(key, value)
    local = (master or conf.get("spark.master", "local[*]")).startswith("local")
    from pyspark import SparkContext

    running = SparkContext._active_spark_context is not None  # its JVM has its options
    if local:
        for key, value in LOCAL_SETTINGS.items():
            if not conf.contains(key):
                if key == "spark.driver.extraJavaOptions" and class_archive and not running:
                    value = f"{value} {_archive_option()}".strip()
                builder = builder.config(key, value)
    if shuffle_partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    elif not conf.contains("spark.sql.shuffle.partitions") and local:
        # Spark's 200 shuffle partitions are for clusters; on one machine a few per core
        builder = builder.config("spark.sql.shuffle.partitions", str(2 * (os.cpu_count() or 2)))
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: say why in one line
        _recording.clear()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparkUnavailable(f"Spark did not start: {first}") from exc
    session.sparkContext.setLogLevel("ERROR")
    session.conf.set("spark.sql.session.timeZone", "UTC")
    return session
