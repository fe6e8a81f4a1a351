"""One Spark session for the population tests (local[2], two shuffle partitions): started
by the suite like the HAPI server; without Java or pyspark the tests are skipped, except
under CI=true, where that is a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from fhircare.population.session import SparkUnavailable, java_problem

    problem = java_problem()
    try:
        import pyspark  # noqa: F401
    except ImportError:
        problem = problem or "pyspark is not installed (pip install -e '.[population]')"
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Spark tests cannot run under CI: {problem}")
        pytest.skip(problem)
    from fhircare.population.session import spark_session

    try:
        session = spark_session("local[2]", shuffle_partitions=2, app_name="fhircare-tests")
    except SparkUnavailable as exc:
        pytest.fail(str(exc))
    yield session
    session.stop()
