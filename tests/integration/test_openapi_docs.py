"""The API documentation a developer opens: Swagger UI without a CDN, request bodies in the
schema, and one documented route per FHIR operation."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


def test_swagger_and_redoc_load_their_assets_from_fhircare(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets, page
        for url in assets:
            assert url.startswith("/"), f"{page} loads {url} from elsewhere"
            r = client.get(url)
            assert r.status_code == 200 and len(r.content) > 1000 or url.endswith(".png"), url
        assert "cdn." not in html and "googleapis" not in html


def test_create_update_and_operations_document_their_request_body(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, method in [
        ("/fhir/{resource_type}", "post"),
        ("/fhir/{resource_type}/{resource_id}", "put"),
        ("/fhir", "post"),
    ]:
        body = paths[path][method]["requestBody"]["content"]["application/fhir+json"]
        assert body["schema"]["required"] == ["resourceType"], path


def test_each_registered_operation_has_its_own_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    ops = client.app.state.operations.all()
    assert len(ops) >= 6
    for op in ops:
        if op.level == "system":
            expected = [f"/fhir/${op.name}"]
        else:
            head = [f"/fhir/{t}" for t in op.types] or ["/fhir/{resource_type}"]
            tail = f"/{{resource_id}}/${op.name}" if op.level == "instance" else f"/${op.name}"
            expected = [h + tail for h in head]
        for path in expected:
            assert path in paths, path
            post = paths[path]["post"]
            assert post["summary"].startswith(f"${op.name}") and post.get("description")
            assert "requestBody" in post
            assert ("get" in paths[path]) == (not op.affects_state), path
    apply = paths["/fhir/PlanDefinition/{resource_id}/$apply"]["post"]
    assert [p["name"] for p in apply["parameters"]] == ["resource_id"]
    assert "subject=Patient" in apply["description"]


def test_operation_routes_answer_like_the_generic_ones(client: TestClient) -> None:
    client.put("/fhir/Patient/op1", json={"resourceType": "Patient", "id": "op1"})
    everything = client.get("/fhir/Patient/op1/$everything")
    assert everything.status_code == 200 and everything.json()["type"] == "searchset"
    assert client.get("/fhir/PlanDefinition/t2dm/$apply").status_code == 405  # changes data
    missing = client.post("/fhir/PlanDefinition/t2dm/$apply", params={"subject": "Patient/nope"})
    assert missing.status_code == 404
    bad_id = client.post("/fhir/PlanDefinition/no_such id/$apply")
    assert bad_id.status_code == 400
    unknown = client.post("/fhir/Patient/op1/$nothing")
    assert unknown.status_code == 404 and "Unknown operation" in unknown.text
    invalid = client.post("/fhir/Patient/$validate", json={"resourceType": "Patient", "gender": 1})
    assert invalid.status_code == 200 and invalid.json()["issue"][0]["severity"] == "error"
