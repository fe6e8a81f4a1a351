"""A small message bus: checks before writes, handlers after writes.

Domain modules register with `register(bus)` functions wired once in `bootstrap.py`.
* checks: `check(store, old, new)` run before a write of a type; raise a FhirError to refuse;
* handlers: `handler(store, resource)` run after a committed write of a type; they return
  the resources they wrote, which are published in turn (bounded depth). Handlers are
  idempotent, so a replayed event writes nothing new.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from fhircare.store.base import Store

log = logging.getLogger("fhircare.bus")

Check = Callable[[Store, dict[str, Any] | None, dict[str, Any]], None]
Handler = Callable[[Store, dict[str, Any]], list[dict[str, Any]]]

MAX_DEPTH = 4


class MessageBus:
    def __init__(self) -> None:
        self._checks: dict[str, list[Check]] = defaultdict(list)
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self.failures: deque[str] = deque(maxlen=1000)  # the latest, without patient data
        self.failure_count = 0

    def check(self, resource_type: str, fn: Check) -> None:
        self._checks[resource_type].append(fn)

    def on(self, resource_type: str, fn: Handler) -> None:
        self._handlers[resource_type].append(fn)

    def run_checks(self, store: Store, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        for fn in self._checks.get(new.get("resourceType", ""), []):
            fn(store, old, new)

    def publish(self, store: Store, written: list[dict[str, Any]], depth: int = 0) -> list[dict]:
        """Run the handlers for each written resource; returns everything they wrote."""
        produced: list[dict[str, Any]] = []
        if depth >= MAX_DEPTH:
            return produced
        for resource in written:
            for fn in self._handlers.get(resource.get("resourceType", ""), []):
                try:
                    out = fn(store, resource) or []
                except Exception as exc:  # a handler must never undo an acknowledged write
                    name = getattr(fn, "__qualname__", repr(fn))
                    msg = f"{name} failed on {resource.get('resourceType')}: {type(exc).__name__}"
                    log.error(msg)  # no traceback: it may quote resource values
                    log.debug("traceback", exc_info=exc)
                    self.failures.append(msg)
                    self.failure_count += 1
                    continue
                produced.extend(out)
        if produced:
            produced.extend(self.publish(store, produced, depth + 1))
        return produced
