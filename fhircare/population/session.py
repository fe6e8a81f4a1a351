"""The Spark session of the population commands: local `local[*]` by default, a cluster
through `--spark-master` or the standard Spark settings (SPARK_HOME/conf/spark-defaults.conf,
`spark.master` from spark-submit, PYSPARK_SUBMIT_ARGS) without code changes."""

from __future__ import annotations

import os
import shutil
from typing import Any

# One short-lived JVM on a small machine: the JIT's quick tier only (the optimising tier
# spends more CPU compiling than a run of minutes gains back) and one GC thread.
LOCAL_SETTINGS = {
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}


class SparkUnavailable(RuntimeError):
    """Spark cannot start here (no Java, or pyspark not installed): one line for the user."""


def java_problem() -> str | None:
    """Why Java cannot run Spark, or None when a `java` is found."""
    home = os.environ.get("JAVA_HOME")
    if home:
        if os.path.exists(os.path.join(home, "bin", "java")):
            return None
        return f"JAVA_HOME={home} has no bin/java; Spark needs Java 17 or 21"
    if shutil.which("java") is None:
        return "Java not found (no `java` on PATH, JAVA_HOME unset); Spark needs Java 17 or 21"
    return None


def spark_session(
    master: str | None = None, *, shuffle_partitions: int | None = None, app_name: str = "fhircare"
) -> Any:
    """A SparkSession (pyspark's getOrCreate: reused when one runs in this process).

    `master` wins over the standard settings; without either, `local[*]`.
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
    for key, value in (("spark.ui.enabled", "false"), ("spark.ui.showConsoleProgress", "false")):
        if not conf.contains(key):
            builder = builder.config(key, value)
    local = (master or conf.get("spark.master", "local[*]")).startswith("local")
    if local:
        for key, value in LOCAL_SETTINGS.items():
            if not conf.contains(key):
                builder = builder.config(key, value)
    if shuffle_partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    elif not conf.contains("spark.sql.shuffle.partitions") and local:
        # Spark's 200 shuffle partitions are for clusters; on one machine a few per core
        builder = builder.config("spark.sql.shuffle.partitions", str(2 * (os.cpu_count() or 2)))
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: say why in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparkUnavailable(f"Spark did not start: {first}") from exc
    session.sparkContext.setLogLevel("ERROR")
    session.conf.set("spark.sql.session.timeZone", "UTC")
    return session
