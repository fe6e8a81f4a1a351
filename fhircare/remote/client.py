"""A synchronous FHIR R4 REST client on httpx.

One method, `_request`, sends every call: it retries what may safely be retried (see
`retry.py`) and turns every HTTP status into a typed `FhirError` carrying the server's
OperationOutcome. Searches and histories page lazily by following the server's `next` link
exactly as given (absolute, or relative to the base URL).

Every request carries `Cache-Control: no-cache`. HAPI FHIR answers a search repeated within
60 s (its stock `reuse_cached_search_results_millis`) from the first one's results unless
the request says `no-cache`; everything fhircare reads from the server decides something
(what to pull, whether a discharge is processed, what a reconciliation sees), so no read may
be older than the request. (`no-store` is not used: HAPI would stop paging at 100 results.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urljoin

import httpx

from fhircare.fhir.errors import (
    BadRequest,
    Conflict,
    FhirError,
    Forbidden,
    Gone,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)
from fhircare.remote.retry import (
    IDEMPOTENT_METHODS,
    RetryPolicy,
    bundle_is_idempotent,
    is_retryable_error,
    is_retryable_status,
)

FHIR_JSON = "application/fhir+json"
# Fresh answers only: bypasses HAPI's search cache (and any HTTP cache on the way).
NO_CACHE = {"Cache-Control": "no-cache"}
Params = Mapping[str, str | int] | Iterable[tuple[str, str | int]] | None


class ServerError(FhirError):
    """The server failed (HTTP 5xx)."""

    status = 502
    code = "exception"


class TooManyRequests(FhirError):
    """The server kept answering 429 after every retry."""

    status = 429
    code = "throttled"


class BadResponse(FhirError):
    """The server's answer is not what FHIR promises (not JSON, wrong Bundle, short)."""

    status = 502
    code = "exception"


class RemoteUnavailable(FhirError):
    """The server could not be reached or the connection failed.

    `maybe_applied` is true when the request may have reached the server (a read timeout
    or dropped connection on a request that was not retried).
    """

    status = 503
    code = "transient"

    def __init__(self, diagnostics: str, *, maybe_applied: bool = False) -> None:
        super().__init__(diagnostics)
        self.maybe_applied = maybe_applied


STATUS_ERRORS: dict[int, type[FhirError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    410: Gone,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
    429: TooManyRequests,
}


def error_for(status: int, body: Any, text: str = "") -> FhirError:
    """The typed error for an HTTP error status, carrying the server's OperationOutcome."""
    cls = STATUS_ERRORS.get(status) or (ServerError if status >= 500 else FhirError)
    outcome = (
        body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else None
    )
    if outcome:
        issues = outcome.get("issue") or []
        parts = [i.get("diagnostics") or (i.get("details") or {}).get("text") for i in issues]
        diagnostics = "; ".join(p for p in parts if p) or f"HTTP {status}"
    else:
        diagnostics = f"HTTP {status}" + (f": {text[:300]}" if text else "")
    # 4xx keep the server's status; a remote 5xx is a bad gateway (502) for our callers.
    err = cls(diagnostics, status=status if status < 500 else None)
    err.http_status = status  # type: ignore[attr-defined]
    err.server_outcome = outcome  # type: ignore[attr-defined]
    return err


def parse_etag(etag: str | None) -> str | None:
    """'W/"3"' -> '3'."""
    if not etag:
        return None
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') or None


def version_from_location(location: str | None) -> str | None:
    """'Patient/1/_history/3' (absolute or relative) -> '3'."""
    if location and "/_history/" in location:
        return location.rsplit("/_history/", 1)[1].split("/")[0].split("?")[0] or None
    return None


def check_bundle_response(request: dict[str, Any], response: Any, expected_type: str) -> None:
    """Raise BadResponse unless `response` answers every entry of `request`."""
    if not isinstance(response, dict) or response.get("resourceType") != "Bundle":
        raise BadResponse(f"expected a {expected_type} Bundle, got {_kind(response)}")
    if response.get("type") != expected_type:
        raise BadResponse(f"expected Bundle.type {expected_type}, got {response.get('type')!r}")
    sent = len(request.get("entry") or [])
    got = response.get("entry") or []
    if len(got) != sent:
        raise BadResponse(f"{expected_type} has {len(got)} entries for {sent} requests")
    for i, entry in enumerate(got):
        if not isinstance(entry, dict) or not (entry.get("response") or {}).get("status"):
            raise BadResponse(f"{expected_type} entry {i} has no response.status")


def _kind(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("resourceType") or "an object without resourceType")
    return type(body).__name__


def _params(params: Params) -> list[tuple[str, str]]:
    if params is None:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    return [(str(k), str(v)) for k, v in items]


class FhirClient:
    """A FHIR R4 REST client for one server base URL."""

    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        auth: httpx.Auth | None = None,
        timeout: float | httpx.Timeout = httpx.Timeout(30.0, connect=5.0),
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._owns_http = http is None
        self._http = http or httpx.Client(
            transport=transport, auth=auth, timeout=timeout, follow_redirects=False
        )
        self._auth = auth if http is not None else None  # an injected client keeps its own
        self._headers = {"Accept": FHIR_JSON, **NO_CACHE, **(headers or {})}

    # ---- plumbing ---------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """An absolute URL: relative paths resolve against the base URL."""
        if path.startswith(("http://", "https://")):
            return path
        return urljoin(self.base_url + "/", path)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        validate: Callable[[Any], None] | None = None,
    ) -> tuple[httpx.Response, Any]:
        """Send with retries; (response, parsed JSON body or None) or a typed FhirError."""
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        hdrs = dict(self._headers)
        content: bytes | None = None
        if json_body is not None:
            hdrs["Content-Type"] = FHIR_JSON
            content = json.dumps(json_body, separators=(",", ":")).encode()
        hdrs.update(headers or {})
        url = self.url(path)
        query = _params(params) or None
        policy = self.retry
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= policy.max_attempts
            try:
                kwargs: dict[str, Any] = {"params": query, "headers": hdrs, "content": content}
                if self._auth is not None:
                    kwargs["auth"] = self._auth
                response = self._http.request(method, url, **kwargs)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                raise RemoteUnavailable(f"{method} {url}: not a usable URL ({exc})") from exc
            except httpx.TransportError as exc:
                if last or not is_retryable_error(exc, idempotent):
                    maybe = not is_retryable_error(exc, False)
                    raise RemoteUnavailable(
                        f"{method} {url} failed after {attempt} attempt(s): "
                        f"{type(exc).__name__}: {exc}",
                        maybe_applied=maybe,
                    ) from exc
                policy.sleep(policy.delay(attempt))
                continue
            status = response.status_code
            if status >= 400:
                if not last and is_retryable_status(status, idempotent):
                    response.close()
                    policy.sleep(policy.delay(attempt, response))
                    continue
                raise error_for(status, _try_json(response), response.text)
            try:
                body = self._body(response)
                if validate is not None:
                    validate(body)
            except BadResponse:
                if last or not (idempotent and policy.retry_bad_response):
                    raise
                policy.sleep(policy.delay(attempt))
                continue
            return response, body

    @staticmethod
    def _body(response: httpx.Response) -> Any:
        if not response.content or response.status_code == 204:
            return None
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            ctype = response.headers.get("Content-Type", "?")
            raise BadResponse(
                f"{response.request.method} {response.request.url}: body is not JSON "
                f"({ctype}): {exc}"
            ) from exc

    def _resource(self, body: Any, what: str) -> dict[str, Any]:
        if not isinstance(body, dict) or "resourceType" not in body:
            raise BadResponse(f"{what}: expected a resource, got {_kind(body)}")
        return body

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- instance and type level ---------------------------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        """The server's CapabilityStatement (GET /metadata)."""
        _, body = self._request("GET", "metadata")
        return self._resource(body, "metadata")

    def read(self, resource_type: str, id: str) -> dict[str, Any]:
        _, body = self._request("GET", f"{resource_type}/{id}")
        return self._resource(body, f"read {resource_type}/{id}")

    def vread(self, resource_type: str, id: str, version_id: str) -> dict[str, Any]:
        _, body = self._request("GET", f"{resource_type}/{id}/_history/{version_id}")
        return self._resource(body, f"vread {resource_type}/{id}/_history/{version_id}")

    def create(
        self, resource: dict[str, Any], *, if_none_exist: str | None = None
    ) -> dict[str, Any]:
        """POST a new resource; with `if_none_exist` (a query) it is conditional.

        Returns the stored resource (the server's representation, else the one sent with the
        id and version from the Location header).
        """
        rtype = resource["resourceType"]
        headers = {"Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        response, body = self._request(
            "POST", rtype, json_body=resource, headers=headers, idempotent=bool(if_none_exist)
        )
        return self._written(resource, response, body)

    def update(self, resource: dict[str, Any], *, if_match: str | None = None) -> dict[str, Any]:
        """PUT a resource by id (creates it when absent); `if_match` is a versionId."""
        rtype, rid = resource["resourceType"], resource["id"]
        headers = {"Prefer": "return=representation"}
        if if_match is not None:
            headers["If-Match"] = f'W/"{if_match}"'
        response, body = self._request("PUT", f"{rtype}/{rid}", json_body=resource, headers=headers)
        return self._written(resource, response, body)

    def conditional_update(
        self, resource_type: str, query: Params | str, resource: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT [type]?query: update the single match, or create when none match."""
        params = None if isinstance(query, str) else query
        path = f"{resource_type}?{query}" if isinstance(query, str) else resource_type
        response, body = self._request(
            "PUT",
            path,
            params=params,
            json_body=resource,
            headers={"Prefer": "return=representation"},
        )
        return self._written(resource, response, body)

    def delete(self, resource_type: str, id: str) -> str | None:
        """DELETE one resource; the new (deleted) versionId when the server says it."""
        response, _ = self._request("DELETE", f"{resource_type}/{id}")
        return parse_etag(response.headers.get("ETag"))

    def _written(self, sent: dict[str, Any], response: httpx.Response, body: Any) -> dict[str, Any]:
        if isinstance(body, dict) and body.get("resourceType") == sent.get("resourceType"):
            return body
        location = response.headers.get("Content-Location") or response.headers.get("Location")
        out = dict(sent)
        if location:
            rel = location.split(self.base_url + "/", 1)[-1]
            parts = rel.split("/")
            if len(parts) >= 2:
                out["id"] = parts[1]
        vid = parse_etag(response.headers.get("ETag")) or version_from_location(location)
        if vid:
            out["meta"] = {**(out.get("meta") or {}), "versionId": vid}
        return out

    # ---- search and history ------------------------------------------------------------------

    def pages(self, path: str, params: Params = None) -> Iterator[dict[str, Any]]:
        """Every Bundle page of a search or history, following `next` links lazily."""
        url: str | None = path
        query: Params = params
        seen: set[str] = set()
        while url:
            _, body = self._request("GET", url, params=query)
            if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
                raise BadResponse(f"GET {url}: expected a Bundle, got {_kind(body)}")
            yield body
            nxt = next(
                (lk.get("url") for lk in body.get("link") or [] if lk.get("relation") == "next"),
                None,
            )
            if nxt:
                nxt = self.url(nxt)
                if nxt in seen:
                    raise BadResponse(f"paging loop: next link {nxt} was already followed")
                seen.add(nxt)
            url, query = nxt, None

    def search(self, resource_type: str, params: Params = None) -> Iterator[dict[str, Any]]:
        """Lazily every matching resource (search.mode 'match'), page after page."""
        for page in self.pages(resource_type, params):
            for entry in page.get("entry") or []:
                mode = (entry.get("search") or {}).get("mode", "match")
                if mode == "match" and "resource" in entry:
                    yield entry["resource"]

    def search_all(self, resource_type: str, params: Params = None) -> list[dict[str, Any]]:
        return list(self.search(resource_type, params))

    def history(
        self,
        resource_type: str | None = None,
        id: str | None = None,
        *,
        since: str | None = None,
        count: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Lazily every history entry (resource/request/response), newest first."""
        if id and not resource_type:
            raise ValueError("history of an id needs its resource type")
        path = "/".join(p for p in (resource_type, id, "_history") if p)
        params: list[tuple[str, str | int]] = []
        if since:
            params.append(("_since", since))
        if count:
            params.append(("_count", count))
        for page in self.pages(path, params):
            yield from page.get("entry") or []

    # ---- bundles -------------------------------------------------------------------------------

    def transaction(self, bundle: dict[str, Any], *, prefer: str | None = None) -> dict[str, Any]:
        """POST a transaction Bundle; the checked transaction-response.

        Retried after ambiguous failures only when every entry is idempotent. A response
        that does not answer every entry raises BadResponse.
        """
        return self._bundle(bundle, "transaction", prefer)

    def batch(self, bundle: dict[str, Any], *, prefer: str | None = None) -> dict[str, Any]:
        """POST a batch Bundle; the batch-response (entries may carry their own errors)."""
        return self._bundle(bundle, "batch", prefer)

    def _bundle(self, bundle: dict[str, Any], kind: str, prefer: str | None) -> dict[str, Any]:
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != kind:
            raise ValueError(f"expected a {kind} Bundle")
        headers = {"Prefer": prefer} if prefer else None
        _, body = self._request(
            "POST",
            self.base_url,
            json_body=bundle,
            headers=headers,
            idempotent=bundle_is_idempotent(bundle),
            validate=lambda b: check_bundle_response(bundle, b, f"{kind}-response"),
        )
        return body


def _try_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
