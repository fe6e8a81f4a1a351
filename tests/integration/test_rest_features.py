"""REST features of the FHIR facade: PATCH, conditional create from a query string, trailing
slashes, content negotiation, CORS, 405 with Allow, $apply (R4) and $everything."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhircare.api.app import create_app
from fhircare.config import Settings

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
def api(tmp_path: Path) -> TestClient:
    settings = Settings(data=tmp_path / "data", base_url="http://testserver/fhir", audit=False)
    with TestClient(create_app(settings)) as c:
        yield c


def _patient(c: TestClient, **extra: Any) -> dict[str, Any]:
    body = {"resourceType": "Patient", "name": [{"family": "Chalmers", "given": ["Peter"]}]}
    r = c.post("/fhir/Patient", json={**body, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def _op(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    part = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name == "value" and isinstance(value, list):  # a complex value as parts
            part.append({"name": "value", "part": value})
        elif name == "value":
            part.append({"name": "value", **value})
        elif name in ("index", "source", "destination"):
            part.append({"name": name, "valueInteger": value})
        else:
            part.append({"name": name, "valueString": value})
    return {"name": "operation", "part": part}


def _fhirpath_patch(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(ops)}


# ---- PATCH ----------------------------------------------------------------------------------


def test_json_patch_updates_validates_and_versions(api: TestClient) -> None:
    p = _patient(api, birthDate="1974-12-25")
    ops = [
        {"op": "test", "path": "/birthDate", "value": "1974-12-25"},
        {"op": "replace", "path": "/birthDate", "value": "1974-12-26"},
        {"op": "add", "path": "/name/0/given/-", "value": "James"},
    ]
    r = api.patch(f"/fhir/Patient/{p['id']}", content=json.dumps(ops), headers=JSON_PATCH)
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == 'W/"2"'
    assert r.headers["content-location"].endswith(f"/Patient/{p['id']}/_history/2")
    assert r.json()["birthDate"] == "1974-12-26"
    assert r.json()["name"][0]["given"] == ["Peter", "James"]
    assert api.get(f"/fhir/Patient/{p['id']}").json()["meta"]["versionId"] == "2"
    assert api.get(f"/fhir/Patient/{p['id']}/_history/1").json()["birthDate"] == "1974-12-25"


@pytest.mark.parametrize(
    ("ops", "status"),
    [
        ([{"op": "replace", "path": "/birthDate", "value": "not-a-date"}], 422),  # invalid result
        ([{"op": "replace", "path": "/gender", "value": "nope"}], 422),
        ([{"op": "test", "path": "/name/0/family", "value": "Other"}], 422),  # failed test
        ([{"op": "remove", "path": "/telecom"}], 422),  # path matches nothing
        ([{"op": "replace", "path": "/id", "value": "other"}], 422),  # id is the URL's
        ([{"op": "jump", "path": "/x"}], 400),  # not a JSON Patch operation
        ({"op": "replace"}, 400),  # not an array
    ],
)
def test_a_patch_that_fails_changes_nothing(api: TestClient, ops: Any, status: int) -> None:
    p = _patient(api)
    r = api.patch(f"/fhir/Patient/{p['id']}", content=json.dumps(ops), headers=JSON_PATCH)
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert api.get(f"/fhir/Patient/{p['id']}").json() == p


def test_fhirpath_patch_add_insert_replace_delete_move(api: TestClient) -> None:
    p = _patient(
        api,
        identifier=[{"system": "urn:a", "value": "1"}, {"system": "urn:b", "value": "2"}],
        deceasedBoolean=False,
        telecom=[{"system": "phone", "value": "555-0100"}],
    )
    body = _fhirpath_patch(
        _op("add", "Patient", name="birthDate", value={"valueDate": "1980-01-02"}),
        _op(
            "add",
            "Patient",
            name="address",
            value=[{"name": "city", "valueString": "Leeds"}, {"name": "use", "valueCode": "home"}],
        ),
        _op("insert", "Patient.name[0].given", index=0, value={"valueString": "Dr"}),
        _op("replace", "Patient.deceased", value={"valueBoolean": True}),
        _op("delete", "Patient.telecom.where(system='phone')"),
        _op("move", "Patient.identifier", source=1, destination=0),
    )
    r = api.patch(f"/fhir/Patient/{p['id']}", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["birthDate"] == "1980-01-02"
    assert got["address"] == [{"city": "Leeds", "use": "home"}]  # a list element: appended
    assert got["name"][0]["given"] == ["Dr", "Peter"]
    assert got["deceasedBoolean"] is True
    assert "telecom" not in got
    assert [i["system"] for i in got["identifier"]] == ["urn:b", "urn:a"]


def test_fhirpath_patch_edge_cases_of_the_spec(api: TestClient) -> None:
    """No operation changes nothing; deleting an element's last child removes the emptied
    parent; names that are FHIRPath keywords (Narrative.div) are paths too."""
    p = _patient(
        api,
        contact=[{"name": {"text": "Robin"}, "gender": "female"}],
        text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">old</div>'},
    )
    same = api.patch(f"/fhir/Patient/{p['id']}", json=_fhirpath_patch())
    assert same.status_code == 200 and same.json()["meta"]["versionId"] == "1"
    div = '<div xmlns="http://www.w3.org/1999/xhtml">new</div>'
    r = api.patch(
        f"/fhir/Patient/{p['id']}",
        json=_fhirpath_patch(
            _op("delete", "Patient.contact[0].name.text"),
            _op("replace", "Patient.text.div", value={"valueString": div}),
        ),
    )
    assert r.status_code == 200, r.text
    assert r.json()["contact"] == [{"gender": "female"}]
    assert r.json()["text"]["div"] == div


@pytest.mark.parametrize(
    ("op", "status"),
    [
        (
            _op("replace", "Patient.name.given | Patient.name.family", value={"valueString": "x"}),
            422,
        ),
        (_op("replace", "Patient.birthDate", value={"valueDate": "2000-01-01"}), 422),  # none
        (_op("add", "Patient", name="gender", value={"valueCode": "wrong"}), 422),  # invalid
        (
            _op("insert", "Patient.name", index=5, value=[{"name": "family", "valueString": "Z"}]),
            422,
        ),
        (_op("teleport", "Patient"), 400),
        (_op("replace", "Patient.name.where(", value={"valueString": "x"}), 400),  # bad FHIRPath
    ],
)
def test_a_fhirpath_patch_that_fails_changes_nothing(
    api: TestClient, op: dict[str, Any], status: int
) -> None:
    p = _patient(api)
    r = api.patch(f"/fhir/Patient/{p['id']}", json=_fhirpath_patch(op))
    assert r.status_code == status, r.text
    assert api.get(f"/fhir/Patient/{p['id']}").json() == p


def test_merge_patch_is_what_fhirpy_sends(api: TestClient) -> None:
    p = _patient(api, gender="male")
    r = api.patch(f"/fhir/Patient/{p['id']}", json={"gender": None, "active": True})
    assert r.status_code == 200, r.text
    assert "gender" not in r.json() and r.json()["active"] is True
    r = api.patch(
        f"/fhir/Patient/{p['id']}",
        content=json.dumps({"name": [{"family": "New"}]}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.json()["name"] == [{"family": "New"}]


def test_patch_if_match_prefer_and_conditional_patch(api: TestClient) -> None:
    p = _patient(api, identifier=[{"system": "urn:mrn", "value": "42"}])
    ops = json.dumps([{"op": "add", "path": "/active", "value": True}])
    stale = api.patch(
        f"/fhir/Patient/{p['id']}", content=ops, headers={**JSON_PATCH, "If-Match": 'W/"9"'}
    )
    assert stale.status_code == 412
    assert api.get(f"/fhir/Patient/{p['id']}").json()["meta"]["versionId"] == "1"
    minimal = api.patch(
        f"/fhir/Patient/{p['id']}",
        content=ops,
        headers={**JSON_PATCH, "If-Match": 'W/"1"', "Prefer": "return=minimal"},
    )
    assert minimal.status_code == 200 and minimal.content == b""
    assert minimal.headers["etag"] == 'W/"2"'
    r = api.patch(
        "/fhir/Patient?identifier=urn:mrn|42",
        content=json.dumps([{"op": "add", "path": "/gender", "value": "male"}]),
        headers=JSON_PATCH,
    )
    assert r.status_code == 200 and r.json()["gender"] == "male"
    assert (
        api.patch("/fhir/Patient?identifier=urn:mrn|nope", content=ops, headers=JSON_PATCH)
    ).status_code == 404
    _patient(api, identifier=[{"system": "urn:mrn", "value": "42"}])
    many = api.patch("/fhir/Patient?identifier=urn:mrn|42", content=ops, headers=JSON_PATCH)
    assert many.status_code == 412
    assert api.patch("/fhir/Patient", content=ops, headers=JSON_PATCH).status_code == 400
    assert api.patch("/fhir/Patient/nobody", content=ops, headers=JSON_PATCH).status_code == 404
    xml = api.patch(
        f"/fhir/Patient/{p['id']}", content=b"<x/>", headers={"Content-Type": "application/xml"}
    )
    assert xml.status_code == 415


def test_patch_entries_in_transaction_and_batch(api: TestClient) -> None:
    p = _patient(api)
    ops = [{"op": "add", "path": "/active", "value": True}]
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(json.dumps(ops).encode()).decode(),
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{p['id']}"}},
            {
                "resource": _fhirpath_patch(
                    _op("add", "Patient", name="gender", value={"valueCode": "x"})
                ),
                "request": {"method": "PATCH", "url": f"Patient/{p['id']}"},
            },
        ],
    }
    r = api.post("/fhir", json=bundle)
    assert r.status_code == 400, r.text  # the same resource patched twice in one transaction
    bundle["entry"] = bundle["entry"][:1] + [
        {
            "resource": {"resourceType": "Patient", "gender": "nope"},
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    assert api.post("/fhir", json=bundle).status_code == 422
    assert api.get(f"/fhir/Patient/{p['id']}").json() == p  # all or nothing
    bundle["entry"][1]["resource"]["gender"] = "female"
    r = api.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["response"]["status"] == "200 OK"
    assert api.get(f"/fhir/Patient/{p['id']}").json()["active"] is True
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": _fhirpath_patch(
                    _op("replace", "Patient.active", value={"valueBoolean": False})
                ),
                "request": {"method": "PATCH", "url": f"Patient/{p['id']}"},
            },
            {
                "resource": _fhirpath_patch(
                    _op("replace", "Patient.active", value={"valueBoolean": False})
                ),
                "request": {"method": "PATCH", "url": "Patient/nobody"},
            },
        ],
    }
    r = api.post("/fhir", json=batch)
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses == ["200 OK", "404"]
    assert api.get(f"/fhir/Patient/{p['id']}").json()["active"] is False


def test_capability_statement_declares_patch(api: TestClient) -> None:
    cs = api.get("/fhir/metadata").json()
    assert "application/json-patch+json" in cs["patchFormat"]
    patient = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    assert {"code": "patch"} in patient["interaction"]


# ---- queries that would be ignored -------------------------------------------------------


def test_post_with_a_query_string_is_a_conditional_create(api: TestClient) -> None:
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "7"}]}
    first = api.post("/fhir/Patient?identifier=urn:mrn|7", json=body)
    second = api.post("/fhir/Patient?identifier=urn:mrn|7", json=body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert api.get("/fhir/Patient?identifier=urn:mrn|7").json()["total"] == 1
    bad = api.post("/fhir/Patient?nonsense=1", json=body)
    assert bad.status_code == 400  # an unknown criterion is refused, not ignored
    clash = api.post(
        "/fhir/Patient?identifier=urn:mrn|7",
        json=body,
        headers={"If-None-Exist": "identifier=urn:mrn|8"},
    )
    assert clash.status_code == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/fhir/Patient/{id}?_sort=family"),
        ("GET", "/fhir/Patient/{id}?family=x"),
        ("PUT", "/fhir/Patient/{id}?family=x"),
        ("DELETE", "/fhir/Patient/{id}?family=x"),
        ("GET", "/fhir/Patient/{id}/_history/1?x=1"),
        ("GET", "/fhir/Patient/{id}/_history?_at=2020"),
        ("GET", "/fhir/_history?x=1"),
        ("POST", "/fhir?x=1"),
    ],
)
def test_a_query_an_interaction_would_ignore_is_refused(
    api: TestClient, method: str, path: str
) -> None:
    p = _patient(api)
    body = {"resourceType": "Bundle", "type": "batch"} if path.startswith("/fhir?") else p
    r = api.request(method, path.format(id=p["id"]), json=body)
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["code"] == "not-supported"
    assert api.get(f"/fhir/Patient/{p['id']}").json() == p


# ---- URLs, formats, CORS, methods ---------------------------------------------------------


def test_trailing_slashes_answer_directly(api: TestClient) -> None:
    assert api.get("/fhir/metadata/", follow_redirects=False).status_code == 200
    r = api.post("/fhir/Patient/", json={"resourceType": "Patient"}, follow_redirects=False)
    assert r.status_code == 201
    pid = r.json()["id"]
    assert api.get(f"/fhir/Patient/{pid}/", follow_redirects=False).json()["id"] == pid
    assert api.get("/fhir/Patient/", follow_redirects=False).json()["total"] == 1
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": []}
    assert api.post("/fhir/", json=bundle, follow_redirects=False).status_code == 200


@pytest.mark.parametrize(
    ("query", "accept", "media"),
    [
        ("", None, "application/fhir+json"),
        ("", "*/*", "application/fhir+json"),
        ("", "application/json", "application/json"),
        ("", "application/fhir+xml;q=0.9, application/fhir+json", "application/fhir+json"),
        (
            "",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "application/fhir+json",
        ),
        ("?_format=json", "application/fhir+xml", "application/fhir+json"),
        ("?_format=application/fhir%2Bjson", None, "application/fhir+json"),
    ],
)
def test_json_is_negotiated(api: TestClient, query: str, accept: str | None, media: str) -> None:
    headers = {"Accept": accept} if accept else {}
    r = api.get(f"/fhir/metadata{query}", headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(media)
    assert r.json()["resourceType"] == "CapabilityStatement"


@pytest.mark.parametrize(
    ("query", "accept"),
    [
        ("?_format=xml", None),
        ("?_format=application/fhir%2Bxml", None),
        ("?_format=html", None),
        ("", "application/fhir+xml"),
        ("", "application/xml, text/xml"),
    ],
)
def test_xml_is_406_never_json_labelled_xml(
    api: TestClient, query: str, accept: str | None
) -> None:
    headers = {"Accept": accept} if accept else {}
    r = api.get(f"/fhir/Patient{query}", headers=headers)
    assert r.status_code == 406
    assert r.headers["content-type"].startswith("application/fhir+json")
    assert "XML is not supported" in r.json()["issue"][0]["diagnostics"]


def test_xml_bodies_are_415(api: TestClient) -> None:
    xml = b'<Patient xmlns="http://hl7.org/fhir"><active value="true"/></Patient>'
    r = api.post("/fhir/Patient", content=xml, headers={"Content-Type": "application/fhir+xml"})
    assert r.status_code == 415
    assert api.get("/fhir/Patient").json()["total"] == 0


def test_pretty_output(api: TestClient) -> None:
    compact = api.get("/fhir/metadata").text
    pretty = api.get("/fhir/metadata?_pretty=true").text
    assert "\n" not in compact and "\n  " in pretty
    assert json.loads(pretty) == json.loads(compact)
    assert api.get("/fhir/metadata?_pretty=maybe").status_code == 400


def test_405_names_the_allowed_methods(api: TestClient) -> None:
    p = _patient(api)
    r = api.delete("/fhir")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = api.post(f"/fhir/Patient/{p['id']}", json=p)
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == {"GET", "PUT", "PATCH", "DELETE"}
    assert r.json()["resourceType"] == "OperationOutcome"
    r = api.get(f"/fhir/PlanDefinition/t2dm/$apply?subject=Patient/{p['id']}")
    assert r.status_code == 405 and r.headers["allow"] == "POST"  # it writes: POST only


def test_cors_is_off_unless_configured(api: TestClient) -> None:
    r = api.get("/fhir/metadata", headers={"Origin": "https://app.example.org"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_preflight_and_exposed_headers(tmp_path: Path) -> None:
    settings = Settings(
        data=tmp_path / "data",
        base_url="http://testserver/fhir",
        audit=False,
        cors_origins="https://app.example.org, https://other.example.org",
    )
    origin = "https://app.example.org"
    with TestClient(create_app(settings)) as c:
        pre = c.options(
            "/fhir/Patient/x",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "authorization, if-match, content-type, prefer",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == origin
        assert "PATCH" in pre.headers["access-control-allow-methods"]
        allowed = pre.headers["access-control-allow-headers"].lower()
        for header in ("authorization", "if-match", "if-none-exist", "prefer", "content-type"):
            assert header in allowed
        r = c.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"Origin": origin})
        assert r.status_code == 201
        assert r.headers["access-control-allow-origin"] == origin
        exposed = r.headers["access-control-expose-headers"].lower()
        for header in ("etag", "location", "content-location", "last-modified"):
            assert header in exposed
        foreign = c.options(
            "/fhir/Patient",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert foreign.status_code == 400
        assert "access-control-allow-origin" not in foreign.headers


def test_cors_wildcard_with_credentials_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CORS"):
        Settings(data=tmp_path, cors_origins="*", cors_credentials=True)


# ---- $apply and $everything ---------------------------------------------------------------


def test_apply_returns_the_careplan_and_practitioner_is_optional(api: TestClient) -> None:
    doc = api.post("/fhir/Practitioner", json={"resourceType": "Practitioner"}).json()["id"]
    p = _patient(api, generalPractitioner=[{"reference": f"Practitioner/{doc}"}])
    r = api.post(f"/fhir/PlanDefinition/t2dm/$apply?subject=Patient/{p['id']}")
    assert r.status_code == 201, r.text
    plan = r.json()
    assert plan["resourceType"] == "CarePlan" and plan["status"] == "active"
    assert api.get(f"/fhir/CarePlan/{plan['id']}").json()["id"] == plan["id"]
    tasks = [
        e["resource"] for e in api.get(f"/fhir/Task?patient=Patient/{p['id']}").json()["entry"]
    ]
    assert tasks and all(
        "owner" not in t or t["owner"]["reference"] == f"Patient/{p['id']}" for t in tasks
    )
    work = api.get(f"/care/worklist?practitioner=Practitioner/{doc}").json()
    unassigned = {t["id"] for t in tasks if "owner" not in t}
    assert unassigned <= {i["task"].split("/")[1] for i in work["items"]}
    bad = api.post(
        f"/fhir/PlanDefinition/t2dm/$apply?subject=Patient/{p['id']}&practitioner=Patient/x"
    )
    assert bad.status_code == 400


def test_everything_includes_references_and_pages(api: TestClient) -> None:
    org = api.post("/fhir/Organization", json={"resourceType": "Organization", "name": "C"}).json()
    doc = api.post("/fhir/Practitioner", json={"resourceType": "Practitioner"}).json()
    med = api.post(
        "/fhir/Medication", json={"resourceType": "Medication", "code": {"text": "metformin"}}
    ).json()
    p = _patient(api, managingOrganization={"reference": f"Organization/{org['id']}"})
    other = _patient(api)
    for _ in range(3):
        api.post(
            "/fhir/Observation",
            json={
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "weight"},
                "subject": {"reference": f"Patient/{p['id']}"},
                "performer": [{"reference": f"Practitioner/{doc['id']}"}],
            },
        )
    api.post(
        "/fhir/MedicationRequest",
        json={
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "medicationReference": {"reference": f"Medication/{med['id']}"},
            "subject": {"reference": f"Patient/{p['id']}"},
        },
    )
    api.post(  # another patient's data never leaks in
        "/fhir/Observation",
        json={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "weight"},
            "subject": {"reference": f"Patient/{other['id']}"},
        },
    )
    whole = api.get(f"/fhir/Patient/{p['id']}/$everything").json()
    kinds = [(e["resource"]["resourceType"], e["search"]["mode"]) for e in whole["entry"]]
    assert kinds[0] == ("Patient", "match")
    assert sorted(kinds) == sorted(
        [("Patient", "match")]
        + [("Observation", "match")] * 3
        + [("MedicationRequest", "match")]
        + [("Organization", "include"), ("Practitioner", "include"), ("Medication", "include")]
    )
    assert whole["total"] == 8
    seen, url, pages = [], f"/fhir/Patient/{p['id']}/$everything?_count=3", 0
    while url:
        page = api.get(url.replace("http://testserver", "")).json()
        assert page["total"] == 8 and len(page["entry"]) <= 3
        seen += [e["fullUrl"] for e in page["entry"]]
        url = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), None)
        pages += 1
    assert pages == 3 and sorted(seen) == sorted(e["fullUrl"] for e in whole["entry"])
    typed = api.get(f"/fhir/Patient/{p['id']}/$everything?_type=Observation,Medication").json()
    assert sorted(e["resource"]["resourceType"] for e in typed["entry"]) == [
        "Medication",
        "Observation",
        "Observation",
        "Observation",
    ]
    later = api.get(f"/fhir/Patient/{p['id']}/$everything?_since=2999-01-01T00:00:00Z").json()
    assert later["total"] == 0
    assert api.get(f"/fhir/Patient/{p['id']}/$everything?start=2020").status_code == 400
    assert api.get(f"/fhir/Patient/{p['id']}/$everything?_type=Nope").status_code == 404


@pytest.mark.parametrize(
    ("resource", "if_match", "status"),
    [
        ({"resourceType": "Binary", "contentType": "text/plain", "data": "eA=="}, None, 400),
        (
            {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": "%%"},
            None,
            400,
        ),
        ({"resourceType": "Observation", "status": "final"}, None, 400),
        (None, None, 400),
        (
            _fhirpath_patch(_op("replace", "Patient.active", value={"valueBoolean": True})),
            'W/"7"',
            412,
        ),
    ],
)
def test_a_bad_patch_entry_fails_the_transaction(
    api: TestClient, resource: Any, if_match: str | None, status: int
) -> None:
    p = _patient(api, active=False)
    request: dict[str, Any] = {"method": "PATCH", "url": f"Patient/{p['id']}"}
    if if_match:
        request["ifMatch"] = if_match
    entry: dict[str, Any] = {"request": request}
    if resource is not None:
        entry["resource"] = resource
    created = {
        "resource": {"resourceType": "Patient"},
        "request": {"method": "POST", "url": "Patient"},
    }
    r = api.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [created, entry]}
    )
    assert r.status_code == status, r.text
    assert api.get(f"/fhir/Patient/{p['id']}").json() == p
    assert api.get("/fhir/Patient").json()["total"] == 1  # the POST entry was not written
