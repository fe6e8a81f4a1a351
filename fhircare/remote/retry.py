"""Retry policy for FHIR REST calls: which failures are retried, and how long to wait.

Rule: a request is retried only when repeating it cannot apply a change twice.

* Idempotent requests (GET/HEAD/PUT/DELETE, a POST create with `If-None-Exist`, a
  transaction Bundle whose every entry is idempotent) are retried on connect errors,
  timeouts, dropped connections, 429 and 502/503/504.
* Any other request (a plain POST create, a batch or transaction with plain POSTs) is
  retried only when the failure proves nothing was sent: `httpx.ConnectError`,
  `httpx.ConnectTimeout`, `httpx.PoolTimeout`.

Waits are exponential backoff with full jitter (`uniform(0, min(max_delay, base * 2**n))`),
except that a `Retry-After` header (seconds or HTTP-date) is honoured, capped at
`max_retry_after`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})

# Failures that prove the request never reached the server.
NOT_SENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# Failures after which the server may or may not have applied the request.
AMBIGUOUS_ERRORS: tuple[type[Exception], ...] = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.CloseError,
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class RetryPolicy:
    """How many times and how long to retry.

    `sleep`, `clock` and `rng` are injectable so tests can assert the waits.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    retry_bad_response: bool = True  # a truncated/garbled body of an idempotent call
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], datetime] = _utcnow
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, attempt: int) -> float:
        """Full-jitter delay before retry number `attempt` (1 = first retry)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return self.rng.uniform(0, ceiling)

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """The wait before retry `attempt`: Retry-After when the server gave one."""
        if response is not None:
            after = parse_retry_after(response.headers.get("Retry-After"), self.clock())
            if after is not None:
                return min(after, self.max_retry_after)
        return self.backoff(attempt)


NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def entry_is_idempotent(entry: dict[str, Any]) -> bool:
    """True for a Bundle entry whose repetition cannot change the outcome."""
    request = entry.get("request") or {}
    method = str(request.get("method", "")).upper()
    if method in IDEMPOTENT_METHODS:
        return True
    return method == "POST" and bool(request.get("ifNoneExist"))


def bundle_is_idempotent(bundle: dict[str, Any]) -> bool:
    """True when every entry of a transaction/batch Bundle is idempotent."""
    return all(entry_is_idempotent(e) for e in bundle.get("entry") or [])


def is_retryable_error(exc: Exception, idempotent: bool) -> bool:
    """Whether a transport failure may be retried for this request."""
    if isinstance(exc, NOT_SENT_ERRORS):
        return True
    if isinstance(exc, AMBIGUOUS_ERRORS):
        return idempotent
    return False


def is_retryable_status(status: int, idempotent: bool) -> bool:
    """Whether an HTTP status may be retried for this request."""
    return idempotent and status in RETRY_STATUSES
