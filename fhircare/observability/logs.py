"""Logging configured once at start: FHIRCARE_LOG_LEVEL and FHIRCARE_LOG_FORMAT (text or
JSON lines via python-json-logger), one handler on stderr, the request id on every record.

Tracebacks are logged with their frames and exception types; below DEBUG the exception
messages are withheld, since a message may quote a resource value (patient data).
"""

from __future__ import annotations

import logging
import sys
import traceback
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

request_id: ContextVar[str] = ContextVar("fhircare_request_id", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


class RequestIdFilter(logging.Filter):
    """Stamp each record with the id of the request being served ("-" outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        record.__dict__.pop("color_message", None)  # uvicorn's ANSI copy of the message
        return True


def safe_traceback(exc: BaseException, *, with_messages: bool) -> str:
    """The traceback of `exc` (and its causes); messages only when `with_messages`."""
    if with_messages:
        return "".join(traceback.format_exception(exc)).rstrip()
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(
            traceback.StackSummary.extract(traceback.walk_tb(current.__traceback__)).format()
        )
        name = type(current).__qualname__
        parts.append(f"Traceback (most recent call last):\n{frames}{name} (message withheld)")
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return "\n\nwhich was raised while handling:\n\n".join(reversed(parts)).rstrip()


class _SafeExceptions:
    """Formatter mixin: tracebacks through `safe_traceback`."""

    with_messages = False

    def format(self, record: logging.LogRecord) -> str:
        cached, record.exc_text = record.exc_text, None  # never reuse another formatter's
        try:
            return super().format(record)  # type: ignore[misc]
        finally:
            record.exc_text = cached

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        exc = ei[1] if isinstance(ei, tuple) else ei
        if exc is None:
            return ""
        return safe_traceback(exc, with_messages=self.with_messages)


class TextFormatter(_SafeExceptions, logging.Formatter):
    pass


class JsonLinesFormatter(_SafeExceptions, JsonFormatter):
    pass


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Route every logger (fhircare, uvicorn, libraries) to one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonLinesFormatter(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt=DATE_FORMAT,
        )
    else:
        formatter = TextFormatter(TEXT_FORMAT, datefmt=DATE_FORMAT)
    formatter.with_messages = level == "DEBUG"  # type: ignore[attr-defined]
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # fhircare writes its own access line
    for noisy in ("httpx", "httpcore"):  # their INFO lines carry full URLs (query strings)
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
