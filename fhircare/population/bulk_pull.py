"""Pull a FHIR Bulk Data export (IG v2) from any server: kick off, poll, download, clean up.

Works the same against fhircare's own `$export` and HAPI FHIR's. The status URL is polled
after at most the server's `Retry-After`, from half a second backing off to
`max_poll_interval`, each output file is streamed to
`out_dir` and its line count checked against the manifest, and the job is deleted on the
server at the end (or cancelled when anything fails). Every failure is a `BulkExportError`
with one readable line.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

Progress = Callable[[str, float | None], None]
LEVELS = ("system", "patient", "group")
FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
FIRST_POLL = 0.5  # seconds before the first status poll; doubled up to max_poll_interval


class BulkExportError(Exception):
    """An export that could not be started, finished or downloaded (one line)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ExportNotSupported(BulkExportError):
    """The server has no `$export` at this level (stock HAPI, for instance)."""


def kickoff_url(base_url: str, level: str, group_id: str | None) -> str:
    base = base_url.rstrip("/")
    if level == "system":
        return f"{base}/$export"
    if level == "patient":
        return f"{base}/Patient/$export"
    if level == "group":
        if not group_id:
            raise BulkExportError("a group-level export needs a Group id")
        return f"{base}/Group/{group_id}/$export"
    raise BulkExportError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")


def _diagnostics(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip().splitlines()[0][:300] if response.text.strip() else ""
    if isinstance(body, dict):
        issues = body.get("issue") or []
        texts = [str(i.get("diagnostics") or i.get("code") or "") for i in issues]
        return "; ".join(t for t in texts if t)[:500]
    return ""


def _retry_after(response: httpx.Response, default: float) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


def _progress_fraction(text: str | None) -> float | None:
    """`42%` or `42% (…)` as 0.42; None when the server says no percentage."""
    if not text:
        return None
    head = text.strip().split("%")[0].strip()
    try:
        return min(1.0, max(0.0, float(head) / 100))
    except ValueError:
        return None


def pull_export(
    base_url: str,
    out_dir: Path,
    *,
    level: str = "system",
    group_id: str | None = None,
    types: Sequence[str] | None = None,
    since: str | None = None,
    auth: httpx.Auth | None = None,
    on_progress: Progress | None = None,
    timeout: float = 3600.0,
    max_poll_interval: float = 10.0,
    http_timeout: float = 60.0,
    transport: httpx.BaseTransport | None = None,
) -> list[Path]:
    """Run one export and download its files into `out_dir`; the paths written, in the
    manifest's order. Error files the server lists (OperationOutcome ndjson) are saved in
    `out_dir/errors/` and not returned."""
    report = on_progress or (lambda _msg, _frac: None)
    url = kickoff_url(base_url, level, group_id)
    params: list[tuple[str, str]] = []
    if types:
        params.append(("_type", ",".join(types)))
    if since:
        params.append(("_since", since))
    deadline = time.monotonic() + timeout
    client = httpx.Client(auth=auth, timeout=http_timeout, transport=transport)
    status_url: str | None = None
    try:
        status_url = _kick_off(client, url, params, deadline, max_poll_interval, report)
        manifest = _poll(client, status_url, deadline, max_poll_interval, report)
        token_client = client if manifest.get("requiresAccessToken") else None
        return _download_all(client, token_client, manifest, out_dir, report, transport)
    finally:
        if status_url is not None:
            _delete(client, status_url)
        client.close()


def _kick_off(
    client: httpx.Client,
    url: str,
    params: list[tuple[str, str]],
    deadline: float,
    cap: float,
    report: Progress,
) -> str:
    headers = {"Accept": FHIR_JSON, "Prefer": "respond-async"}
    while True:
        report("kick-off", None)
        try:
            response = client.get(url, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise BulkExportError(f"{url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 202:
            location = response.headers.get("content-location")
            if not location:
                raise BulkExportError(f"{url} answered 202 without a Content-Location")
            return str(response.url.join(location))
        if response.status_code == 429 and time.monotonic() < deadline:
            report("server busy; waiting", None)
            time.sleep(min(_retry_after(response, 1.0), cap))
            continue
        detail = _diagnostics(response)
        if _unsupported(response, detail):
            raise ExportNotSupported(
                f"{url}: this server does not offer Bulk Data export "
                f"({response.status_code}: {detail or 'no $export'})",
                status=response.status_code,
            )
        raise BulkExportError(
            f"{url} refused the export ({response.status_code}): {detail}",
            status=response.status_code,
        )


def _unsupported(response: httpx.Response, detail: str) -> bool:
    if response.status_code in (404, 405, 501):
        return True
    lowered = detail.lower()
    return response.status_code == 400 and (
        "does not know how to handle" in lowered or "unknown operation" in lowered
    )


def _poll(
    client: httpx.Client, status_url: str, deadline: float, cap: float, report: Progress
) -> dict[str, Any]:
    backoff = FIRST_POLL
    while True:
        try:
            response = client.get(status_url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise BulkExportError(f"{status_url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 200:
            try:
                manifest = response.json()
            except ValueError as exc:
                raise BulkExportError(f"{status_url}: the manifest is not JSON") from exc
            if not isinstance(manifest, dict) or not isinstance(manifest.get("output"), list):
                raise BulkExportError(f"{status_url}: the manifest has no output list")
            report("complete", 1.0)
            return manifest
        if response.status_code in (202, 429):
            progress = response.headers.get("x-progress")
            report(progress or "in progress", _progress_fraction(progress))
            if time.monotonic() >= deadline:
                raise BulkExportError(f"{status_url}: the export did not finish in time")
            asked = _retry_after(response, cap)
            if response.status_code == 429:  # too many polls: wait as long as told (capped)
                time.sleep(min(asked, cap))
                continue
            # Retry-After on a 202 is a hint (HAPI always says 120 s): poll after at most
            # that long, starting soon and backing off to the cap
            time.sleep(min(asked, backoff, cap))
            backoff = min(backoff * 2, cap)
            continue
        raise BulkExportError(
            f"the export failed ({response.status_code}): {_diagnostics(response)}",
            status=response.status_code,
        )


def _download_all(
    client: httpx.Client,
    token_client: httpx.Client | None,
    manifest: dict[str, Any],
    out_dir: Path,
    report: Progress,
    transport: httpx.BaseTransport | None,
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = (
        None
        if token_client is not None
        else httpx.Client(timeout=client.timeout, transport=transport)
    )
    downloader = token_client or plain
    assert downloader is not None
    try:
        outputs = manifest.get("output") or []
        errors = manifest.get("error") or []
        paths: list[Path] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(outputs):
            rtype = str(item.get("type") or "Resource")
            seen[rtype] = seen.get(rtype, 0) + 1
            name = f"{rtype}.ndjson" if seen[rtype] == 1 else f"{rtype}.{seen[rtype]}.ndjson"
            report(f"downloading {name}", i / max(1, len(outputs)))
            paths.append(_download(downloader, item, out_dir / name))
        for j, item in enumerate(errors):
            _download(downloader, item, out_dir / "errors" / f"OperationOutcome.{j + 1}.ndjson")
        report("downloaded", 1.0)
        return paths
    finally:
        if plain is not None:
            plain.close()


def _download(client: httpx.Client, item: dict[str, Any], path: Path) -> Path:
    url = item.get("url")
    if not isinstance(url, str):
        raise BulkExportError("a manifest entry has no url")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = 0
    last = b"\n"
    try:
        with client.stream("GET", url, headers={"Accept": NDJSON}) as response:
            if response.status_code != 200:
                response.read()
                raise BulkExportError(
                    f"{url}: download failed ({response.status_code}): {_diagnostics(response)}",
                    status=response.status_code,
                )
            with path.open("wb") as handle:
                for chunk in response.iter_bytes():
                    if chunk:
                        handle.write(chunk)
                        lines += chunk.count(b"\n")
                        last = chunk[-1:]
    except httpx.HTTPError as exc:
        raise BulkExportError(f"{url}: {type(exc).__name__}: {exc}") from exc
    if last != b"\n":
        lines += 1  # a last line without its newline
    expected = item.get("count")
    if isinstance(expected, int) and expected != lines:
        raise BulkExportError(
            f"{url}: the manifest says {expected} resources, the file holds {lines}"
        )
    return path


def _delete(client: httpx.Client, status_url: str) -> None:
    """Remove the job on the server (cancel it when it did not finish); never raises: the
    export itself succeeded or already failed with its own error."""
    with contextlib.suppress(httpx.HTTPError):
        client.delete(status_url, headers={"Accept": FHIR_JSON})
