"""Configuration from the environment (prefix FHIRCARE_) via pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, PositiveInt, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FHIRCARE_", env_file=None, extra="ignore")

    # serving
    host: str = "127.0.0.1"
    port: int = 8000
    data: Path = Path(".fhircare")
    base_url: str | None = None  # public base of the FHIR API; default http://host:port/fhir
    store: Literal["embedded", "hapi"] = "embedded"
    server: Literal["uvicorn", "granian"] = "uvicorn"  # the HTTP server of `serve`
    # worker processes of `serve` on one socket and one embedded store (README: --workers)
    workers: int = Field(1, ge=1, le=64)
    worker_index: int = 0  # set by `serve` in each worker; 0 runs the background loops
    fsync: bool = True
    seed_definitions: bool = True  # load profiles/ (Questionnaires, PlanDefinitions...) at start
    audit: bool = True  # AuditEvents for reads and writes of patient data
    # deleting a resource that live resources reference: 409 (as HAPI by default)
    enforce_referential_integrity_on_delete: bool = True
    allow_cascading_deletes: bool = False  # DELETE ...?_cascade=delete (off, as HAPI)

    # limits
    max_body_bytes: int = 10 * 1024 * 1024
    max_header_bytes: int = 32 * 1024  # request line + headers, `serve` (431 above)
    default_page_size: int = 50
    max_page_size: int = 1000
    max_bundle_entries: int = 5000
    request_timeout: float = 60.0

    # Bulk Data export ($export)
    bulk_dir: Path | None = None  # where export files go; default FHIRCARE_DATA/bulk
    bulk_file_lines: int = Field(50_000, ge=1)  # resources per ndjson file (more: split)
    bulk_max_jobs: int = Field(2, ge=1)  # exports running at once; more kick-offs get 429
    bulk_retention_hours: float = Field(24.0, gt=0)  # finished exports are then deleted
    bulk_retry_after: int = Field(2, ge=1)  # seconds, the Retry-After of a running export

    # population stratify on a local Spark: the driver JVM's class-data archive (~170 MB in
    # $XDG_CACHE_HOME/fhircare; the first run records it and takes longer, later runs start faster)
    spark_class_archive: bool = True

    # HAPI / remote FHIR server
    hapi_url: str | None = None
    hapi_timeout: float = 30.0
    sync_interval: float = 0.0  # seconds between background syncs in `serve`; 0 = off
    sync_types: str = (
        "Patient,Practitioner,Organization,Encounter,Condition,Observation,Goal,CarePlan,"
        "CareTeam,Task,ServiceRequest,QuestionnaireResponse,MedicationRequest,"
        "MedicationStatement,List,DetectedIssue,Communication,Provenance"
    )
    sync_batch_size: int = 500
    sweep_interval: float = 300.0  # seconds between sweeps for unprocessed discharges; 0 = off
    sync_policy: Literal["flag", "remote-wins", "local-wins"] = "flag"
    remote_client_id: str | None = None  # SMART backend services, when HAPI is protected
    remote_token_url: str | None = None
    remote_private_key: Path | None = None
    remote_key_id: str | None = None
    remote_alg: Literal["RS384", "ES384"] = "RS384"
    remote_scope: str = "system/*.cruds"

    # security
    auth: Literal["none", "smart"] = "none"
    # FHIRCARE_AUTH=none binds loopback only, unless this is set (e.g. inside a container
    # whose port the host publishes on its own loopback)
    allow_unauthenticated_remote: bool = False
    auth_jwks: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_token_url: str | None = None
    auth_authorize_url: str | None = None
    webhook_secret: str | None = None
    hl7_secret: str | None = None
    mllp_allowed: str | None = None  # comma-separated client addresses
    # CORS for browser apps (SMART): comma-separated origins, "*" for any; unset = off
    cors_origins: str | None = None
    cors_credentials: bool = False  # let browsers send cookies / HTTP auth (not with "*")

    # operations
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    mllp_port: int | None = None  # `serve` also listens for HL7 v2 over MLLP on this port
    mllp_host: str | None = None  # default: the address `serve` binds
    # `serve` registers a rest-hook Subscription on HAPI at start (once) for this endpoint
    # (fhircare's webhook base as HAPI reaches it, e.g. http://fhircare:8000/events/hapi)
    subscribe_endpoint: str | None = None
    subscribe_criteria: str = "Encounter?status=finished"
    # the care manager's web app at /app (a SMART app; with FHIRCARE_AUTH=smart it launches
    # against the authorization server with this client id and these scopes)
    app: bool = True
    app_client_id: str = "fhircare-app"
    app_scope: str = "openid fhirUser user/*.cruds"

    # clinical defaults
    default_tz: str = "UTC"  # for HL7 v2 timestamps without an offset
    care_manager: str | None = None  # Practitioner/x who owns transitional-care Tasks
    # discharges older than this many days open no follow-up (default: mappings, 30 = TCM)
    followup_window_days: PositiveInt | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = []
        if self.store == "hapi" and not self.hapi_url:
            problems.append("FHIRCARE_STORE=hapi needs FHIRCARE_HAPI_URL")
        if self.subscribe_endpoint and not self.hapi_url:
            problems.append("FHIRCARE_SUBSCRIBE_ENDPOINT needs FHIRCARE_HAPI_URL")
        if self.auth == "smart":
            missing = [
                f"FHIRCARE_AUTH_{name.upper()}"
                for name in ("jwks", "issuer", "audience")
                if not getattr(self, f"auth_{name}")
            ]
            if missing:
                problems.append(f"FHIRCARE_AUTH=smart needs {', '.join(missing)}")
        for name in ("port", "mllp_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                problems.append(f"FHIRCARE_{name.upper()}={value} is not a TCP port")
        origins = [o.strip() for o in (self.cors_origins or "").split(",")]
        if self.cors_credentials and "*" in origins:
            problems.append(
                "FHIRCARE_CORS_ORIGINS='*' cannot be combined with FHIRCARE_CORS_CREDENTIALS=true:"
                " list the allowed origins"
            )
        if self.workers > 1:
            problems.extend(self._worker_conflicts())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _worker_conflicts(self) -> list[str]:
        """What several worker processes cannot share (each keeps it in its own memory)."""
        why = f"FHIRCARE_WORKERS={self.workers}"
        out = []
        if self.store != "embedded":
            out.append(f"{why} needs FHIRCARE_STORE=embedded")
        if self.server != "uvicorn":
            out.append(f"{why} needs FHIRCARE_SERVER=uvicorn (granian runs its own workers)")
        if self.hapi_url:
            out.append(f"{why} cannot be combined with FHIRCARE_HAPI_URL (sync is one process)")
        return out

    @property
    def leader(self) -> bool:
        """Whether this process runs the background loops and the MLLP listener."""
        return self.workers == 1 or self.worker_index == 0

    def public_base(self) -> str:
        return (self.base_url or f"http://{self.host}:{self.port}/fhir").rstrip("/")


def config_errors(exc: ValidationError) -> list[str]:
    """One line per configuration problem, named by its environment variable."""
    lines = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        loc = [str(part) for part in error.get("loc", ())]
        if not loc:
            lines.extend(message.split("; "))
            continue
        name = "FHIRCARE_" + loc[0].upper()
        given = error.get("input")
        shown = f"={given!r}" if isinstance(given, str | int | float) else ""
        lines.append(f"{name}{shown}: {message}")
    return lines
