"""/app: served by default with its launch configuration, off with FHIRCARE_APP=false, and
the packaged assets are the build of webapp/ (scripts/build-app was run and committed)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from fhircare.api.app import create_app
from fhircare.config import Settings
from fhircare.paths import webapp_dir

ROOT = Path(__file__).resolve().parents[2]


def test_the_app_is_served_with_its_configuration(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data=tmp_path / "d", fsync=False))) as c:
        assert c.get("/app", follow_redirects=False).headers["location"] == "/app/"
        page = c.get("/app/")
        assert page.status_code == 200
        assert '<script type="module" src="js/main.js">' in page.text
        assert c.get("/app/vendor/fhirclient/fhir-client.min.js").status_code == 200
        conf = c.get("/app/config.json").json()
        assert conf == {
            "fhirPath": "/fhir", "auth": "none", "clientId": "fhircare-app",
            "scope": "openid fhirUser user/*.cruds",
        }
        assert c.get("/app/nothing-here.js").status_code == 404


def test_fhircare_app_false_turns_it_off(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data=tmp_path / "d", fsync=False, app=False))) as c:
        assert c.get("/app/").status_code == 404
        assert c.get("/app/config.json").status_code == 404
        assert c.get("/fhir/metadata").status_code == 200


def test_packaged_assets_are_the_build_of_the_sources() -> None:
    built = webapp_dir()
    sources = ROOT / "webapp" / "src"
    for src in sources.rglob("*"):
        if src.is_file():
            copy = built / src.relative_to(sources)
            assert copy.is_file() and copy.read_bytes() == src.read_bytes(), (
                f"{copy} differs from {src}: run scripts/build-app and commit"
            )
    lock = json.loads((ROOT / "webapp" / "package-lock.json").read_text())
    shipped = json.loads((built / "vendor" / "versions.json").read_text())
    for name, version in shipped.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    package = json.loads((ROOT / "webapp" / "package.json").read_text())
    assert all(v[0].isdigit() for v in package["dependencies"].values()), "pin exact versions"
