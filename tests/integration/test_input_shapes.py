"""Input hardening at the API: Bundle and Parameters shapes checked before anything walks
them, numbers no FHIR decimal can be, token times that are not NumericDates, reference
targets the element does not allow, and a transaction PUT whose body id is not its URL id.
Each runs with auth off and under FHIRCARE_AUTH=smart with real signed tokens."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm

from fhircare.api.app import create_app
from fhircare.config import Settings

BASE = "http://testserver/fhir"
ISS = "https://auth.example.org"
FHIR = {"Content-Type": "application/fhir+json"}
PATIENT = {"resourceType": "Patient", "name": [{"family": "Shape"}]}


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(key: rsa.RSAPrivateKey, scope: str = "system/*.cruds", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISS, "aud": BASE, "sub": "u1", "scope": scope, "iat": now, "exp": now + 300}
    body.update(claims)
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


def _app(root: Path, key: rsa.RSAPrivateKey | None) -> TestClient:
    options: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if key is not None:
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid="k1", alg="RS256", use="sig")
        (root / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
        options = {
            "auth": "smart",
            "auth_jwks": str(root / "jwks.json"),
            "auth_issuer": ISS,
            "auth_audience": BASE,
            "auth_token_url": f"{ISS}/token",
            "auth_authorize_url": f"{ISS}/authorize",
        }
        headers = {"Authorization": f"Bearer {sign(key)}"}
    settings = Settings(data=root / "data", base_url=BASE, fsync=False, **options)
    return TestClient(create_app(settings), raise_server_exceptions=False, headers=headers)


@pytest.fixture(scope="module", params=["auth-off", "auth-smart"])
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, key: Any
) -> Iterator[TestClient]:
    smart = request.param == "auth-smart"
    with _app(tmp_path_factory.mktemp(request.param), key if smart else None) as c:
        for rtype, body in (
            ("Patient", {"resourceType": "Patient", "id": "p1"}),
            ("Patient", {"resourceType": "Patient", "id": "p2"}),
            (
                "Condition",
                {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}},
            ),
        ):
            assert c.put(f"/fhir/{rtype}/{body['id']}", json=body, headers=FHIR).status_code == 201
        yield c


def _changes(c: TestClient) -> int:
    return len(c.app.state.store.changes(0))


def _refused(r: Any, status: int, expression: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    issue = r.json()["issue"][0]
    assert r.json()["resourceType"] == "OperationOutcome"
    if expression is not None:
        assert issue["expression"] == [expression], issue
    return issue


def _tx(entries: Any, kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


POST = {"method": "POST", "url": "Patient"}


@pytest.mark.parametrize(
    "bundle, expression",
    [
        (_tx(5), "Bundle.entry"),
        (_tx([7]), "Bundle.entry[0]"),
        (_tx([{"resource": PATIENT, "request": "POST Patient"}]), "Bundle.entry[0].request"),
        (_tx([{"resource": PATIENT, "request": [POST]}]), "Bundle.entry[0].request"),
        (_tx([{"resource": PATIENT, "request": [POST]}], "batch"), "Bundle.entry[0].request"),
        (
            _tx([{"resource": PATIENT, "request": {"method": ["POST"], "url": "Patient"}}]),
            "Bundle.entry[0].request.method",
        ),
        (
            _tx([{"resource": PATIENT, "request": {"method": "POST", "url": ["Patient"]}}]),
            "Bundle.entry[0].request.url",
        ),
        (_tx([{"resource": PATIENT, "request": POST, "fullUrl": 3}]), "Bundle.entry[0].fullUrl"),
        (_tx([{"resource": "Patient", "request": POST}]), "Bundle.entry[0].resource"),
        (
            _tx([{"resource": PATIENT, "request": {**POST, "ifNoneExist": 5}}]),
            "Bundle.entry[0].request.ifNoneExist",
        ),
        (
            _tx([{"resource": PATIENT, "request": POST}, {"request": {"method": "DELETE"}}]),
            "Bundle.entry[1].request.url",
        ),
    ],
)
def test_a_bundle_of_the_wrong_shape_is_a_400_naming_the_element(
    api: TestClient, bundle: dict[str, Any], expression: str
) -> None:
    """Under SMART these were 500s: the access check walked the entries before the shape
    was checked. Nothing is written."""
    before = _changes(api)
    _refused(api.post("/fhir", json=bundle, headers=FHIR), 400, expression)
    assert _changes(api) == before


@pytest.mark.parametrize(
    "method, path, parameters, expression",
    [
        ("POST", "/fhir/PlanDefinition/hypertension/$apply", ["x"], "Parameters.parameter[0]"),
        ("POST", "/fhir/PlanDefinition/hypertension/$apply", 5, "Parameters.parameter"),
        ("POST", "/fhir/Patient/$validate", [None], "Parameters.parameter[0]"),
        (
            "POST",
            "/fhir/Patient/p1/$everything",
            [{"name": "_count"}],  # inv-1: one of value[x], resource or part
            "Parameters.parameter[0]",
        ),
        (
            "POST",
            "/fhir/PlanDefinition/hypertension/$apply",
            [{"name": "subject", "valueReference": "Patient/p1"}],
            "Parameters.parameter[0].valueReference",
        ),
        ("PATCH", "/fhir/Patient/p1", [{"name": "operation", "part": 5}], None),
    ],
)
def test_parameters_of_the_wrong_shape_are_a_400_before_the_operation_reads_them(
    api: TestClient, method: str, path: str, parameters: Any, expression: str | None
) -> None:
    before = _changes(api)
    body = {"resourceType": "Parameters", "parameter": parameters}
    issue = _refused(api.request(method, path, json=body, headers=FHIR), 400, expression)
    assert issue["expression"][0].startswith("Parameters.parameter")
    assert _changes(api) == before


def test_well_formed_parameters_still_reach_the_operation(api: TestClient) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": {"resourceType": "Patient", "gender": "x"}}],
    }
    r = api.post("/fhir/Patient/$validate", json=body, headers=FHIR)
    assert r.status_code == 200, r.text  # $validate reports on the resource it was given
    assert any(i["severity"] == "error" for i in r.json()["issue"])


@pytest.mark.parametrize(
    "number", ["1" * 5000, "-" + "7" * 5000, "1" * 400 + ".5", "1e999", "1e-400"]
)
def test_a_number_no_decimal_can_hold_is_a_400(api: TestClient, number: str) -> None:
    body = '{"resourceType":"Patient","multipleBirthInteger":' + number + "}"
    issue = _refused(api.post("/fhir/Patient", content=body, headers=FHIR), 400)
    assert "JSON number" in issue["diagnostics"]
    assert len(issue["diagnostics"]) < 200


def test_big_decimals_that_fit_are_kept_exactly(api: TestClient) -> None:
    value = 10**30  # a decimal beyond 64 bits, as the journal keeps it
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "count"},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": value},
    }
    r = api.post("/fhir/Observation", json=obs, headers=FHIR)
    assert r.status_code == 201, r.text
    got = api.get(f"/fhir/Observation/{r.json()['id']}").json()
    assert got["valueQuantity"]["value"] == value


@pytest.mark.parametrize(
    "body, expression",
    [
        (
            {
                "activity": [
                    {
                        "detail": {
                            "status": "scheduled",
                            "performer": [{"reference": "Condition/c1"}],
                        }
                    }
                ]
            },
            "CarePlan.activity[0].detail.performer[0].reference",
        ),
        ({"subject": {"reference": "Condition/c1"}}, "CarePlan.subject.reference"),
        ({"subject": {"reference": f"{BASE}/Condition/c1"}}, "CarePlan.subject.reference"),
        ({"author": {"reference": "Condition/c1"}}, "CarePlan.author.reference"),
        ({"subject": {"reference": "Patient/p1", "type": "Condition"}}, "CarePlan.subject.type"),
    ],
)
def test_a_reference_to_a_type_the_element_does_not_allow_is_a_422(
    api: TestClient, body: dict[str, Any], expression: str
) -> None:
    """The allowed types are the element's targetProfiles in the R4 StructureDefinitions;
    Condition/c1 exists, so only its type is wrong."""
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan"}
    plan.update({"subject": {"reference": "Patient/p1"}, **body})
    before = _changes(api)
    issue = _refused(api.post("/fhir/CarePlan", json=plan, headers=FHIR), 422, expression)
    assert "Condition" in issue["diagnostics"]
    assert _changes(api) == before


def test_allowed_reference_targets_are_stored(api: TestClient) -> None:
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p1"},
        "addresses": [{"reference": "Condition/c1"}],
        "activity": [
            {"detail": {"status": "scheduled", "performer": [{"reference": "Patient/p1"}]}}
        ],
    }
    assert api.post("/fhir/CarePlan", json=plan, headers=FHIR).status_code == 201


def test_a_transaction_reference_is_checked_after_its_urn_resolves(api: TestClient) -> None:
    urn = "urn:uuid:6f1f7b0e-3b5c-4b8e-9a57-0c1f2d3e4a51"
    task = {"resourceType": "Task", "status": "requested", "intent": "order"}
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": urn},
    }
    bundle = _tx(
        [
            {"fullUrl": urn, "resource": task, "request": {"method": "POST", "url": "Task"}},
            {"resource": plan, "request": {"method": "POST", "url": "CarePlan"}},
        ]
    )
    before = _changes(api)
    issue = _refused(api.post("/fhir", json=bundle, headers=FHIR), 422)
    assert "is a Task" in issue["diagnostics"]
    assert _changes(api) == before


def test_a_transaction_put_whose_body_id_differs_fails_the_transaction(api: TestClient) -> None:
    """A direct PUT answers 400; in a transaction the entry used to be silently renamed."""
    direct = api.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p2"}, headers=FHIR)
    _refused(direct, 400, "Patient.id")
    before = _changes(api)
    bundle = _tx(
        [
            {"resource": PATIENT, "request": POST},
            {
                "resource": {"resourceType": "Patient", "id": "p2", "gender": "male"},
                "request": {"method": "PUT", "url": "Patient/p1"},
            },
        ]
    )
    issue = _refused(api.post("/fhir", json=bundle, headers=FHIR), 400)
    assert "Bundle.entry[1]" in issue["diagnostics"]
    assert _changes(api) == before
    assert "gender" not in api.get("/fhir/Patient/p1").json()


def test_a_batch_put_whose_body_id_differs_fails_only_that_entry(api: TestClient) -> None:
    bundle = _tx(
        [
            {
                "resource": {"resourceType": "Patient", "id": "p2", "gender": "male"},
                "request": {"method": "PUT", "url": "Patient/p1"},
            },
            {"resource": PATIENT, "request": POST},
        ],
        "batch",
    )
    r = api.post("/fhir", json=bundle, headers=FHIR)
    assert r.status_code == 200, r.text
    first, second = (e["response"] for e in r.json()["entry"])
    assert first["status"].startswith("400")
    assert first["outcome"]["resourceType"] == "OperationOutcome"
    assert second["status"].startswith("201")
    assert "gender" not in api.get("/fhir/Patient/p1").json()


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_token_whose_times_are_strings_is_a_401(
    tmp_path: Path, key: rsa.RSAPrivateKey, claim: str
) -> None:
    """RFC 7519 NumericDate is a JSON number; PyJWT alone accepts "1796170000"."""
    now = int(time.time())
    value = str({"exp": now + 300, "nbf": now - 5, "iat": now - 5}[claim])
    with _app(tmp_path, key) as c:
        assert c.get("/fhir/Patient").status_code == 200  # the fixture's token is good
        bad = sign(key, **{claim: value})
        r = c.get("/fhir/Patient", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, r.text
        assert claim in r.json()["issue"][0]["diagnostics"]
        assert "NumericDate" in r.headers["www-authenticate"]
