"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document (schemathesis,
in-process over ASGI): no input may cause a 5xx, every response must match the documented
status codes and schemas (errors are OperationOutcomes, FHIR answers are resources).

Bounded and derandomized (a fixed Hypothesis seed derived from each test's name) so CI is
stable; a handful of examples per operation keeps the whole run well under a minute.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from fhircare.api.app import create_app
from fhircare.bootstrap import build_container
from fhircare.config import Settings

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import (  # noqa: E402 - after the importorskip
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

MAX_EXAMPLES = 40
_DATA = Path(tempfile.mkdtemp(prefix="fhircare-fuzz-"))
atexit.register(shutil.rmtree, _DATA, ignore_errors=True)
SETTINGS = Settings(
    data=_DATA / "data",
    base_url="http://localhost/fhir",
    audit=False,
    fsync=False,
    max_body_bytes=64 * 1024,
    max_bundle_entries=20,
    request_timeout=20,
)
CONTAINER = build_container(SETTINGS)  # ours, so no lifespan end closes the store mid-run
atexit.register(CONTAINER.close)
APP = create_app(SETTINGS, CONTAINER)

# Known resources, so that generated paths sometimes reach real data instead of 404s.
KNOWN = {"Patient": "fz-pat", "CarePlan": "fz-cp", "Task": "fz-task"}
TYPES = ["Patient", "CarePlan", "Task", "Observation", "QuestionnaireResponse", "PlanDefinition"]
OPERATIONS = ["$validate", "$everything", "$apply", "$extract", "$reconcile-medications"]


def _seed() -> None:
    with TestClient(APP) as c:
        fhir = {"Content-Type": "application/fhir+json"}
        resources: list[dict[str, Any]] = [
            {"resourceType": "Patient", "id": "fz-pat", "name": [{"family": "Fuzz"}]},
            {
                "resourceType": "CarePlan",
                "id": "fz-cp",
                "status": "active",
                "intent": "plan",
                "subject": {"reference": "Patient/fz-pat"},
            },
            {
                "resourceType": "Task",
                "id": "fz-task",
                "status": "requested",
                "intent": "order",
                "for": {"reference": "Patient/fz-pat"},
            },
        ]
        for r in resources:
            got = c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r, headers=fhir)
            assert got.status_code in (200, 201), got.text


_seed()


@schemathesis.serializer("x-application/hl7-v2+er7")
def _er7(ctx: Any, value: Any) -> bytes:
    """HL7 v2 bodies are text: generated strings go as UTF-8 (anything else as its repr)."""
    return (value if isinstance(value, str) else repr(value)).encode("utf-8", "surrogatepass")


schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def _pick(options: list[str], seed: str) -> str:
    return options[zlib.crc32(seed.encode()) % len(options)]


@schema.hook
def map_path_parameters(ctx: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Steer about half the generated path parameters to real types, ids and operations."""
    if not path_parameters:
        return path_parameters
    seed = repr(sorted(path_parameters.items()))
    if zlib.crc32(seed.encode()) % 2:
        return path_parameters
    out = dict(path_parameters)
    if "resource_type" in out:
        out["resource_type"] = _pick(TYPES, seed)
        if "resource_id" in out:
            out["resource_id"] = KNOWN.get(out["resource_type"], str(out["resource_id"]))
    if "operation" in out:
        out["operation"] = _pick(OPERATIONS, seed)
    for key, rtype in (("task_id", "Task"), ("careplan_id", "CarePlan")):
        if key in out:
            out[key] = KNOWN[rtype]
    return out


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_never_fails_and_matches_its_openapi(case: Any) -> None:
    case.call_and_validate(
        checks=[not_a_server_error, response_schema_conformance, status_code_conformance]
    )
