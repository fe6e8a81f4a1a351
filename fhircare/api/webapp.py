"""The care manager's web app at /app: static files built from `webapp/` and its launch
configuration.

The app is a SMART on FHIR app: it talks to the FHIR API (and fhircare's operations) only.
`/app/config.json` tells it where that API is and how to authenticate: with
`FHIRCARE_AUTH=smart` a standalone launch at the server's authorization endpoint (an EHR
launch through `/app/launch.html?iss=...&launch=...`), else no token at all.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

from fhircare.config import Settings
from fhircare.paths import webapp_dir

router = APIRouter(include_in_schema=False)
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/app")
def app_root() -> RedirectResponse:
    """/app -> /app/ (the page's relative asset URLs need the slash)."""
    return RedirectResponse("/app/", status_code=308)


@router.get("/app/config.json")
def app_config(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    return JSONResponse(
        {
            "fhirPath": "/fhir",
            "auth": settings.auth,
            "clientId": settings.app_client_id,
            "scope": settings.app_scope,
        },
        headers=NO_STORE,
    )


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the app when FHIRCARE_APP is on (the default)."""
    if not settings.app:
        return
    folder = webapp_dir()
    if not (folder / "index.html").is_file():
        raise RuntimeError(f"the web app is not built ({folder}/index.html): run scripts/build-app")
    app.include_router(router)
    app.mount("/app", StaticFiles(directory=folder, html=True), name="app")
