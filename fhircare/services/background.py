"""The background sync loop of `serve` (when FHIRCARE_HAPI_URL and FHIRCARE_SYNC_INTERVAL
are set): pull, push, then process any finished discharge that no notification announced.
A Subscription ping (`POST /events/hapi`) wakes the loop early."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fhircare.observability import metrics

if TYPE_CHECKING:
    from fhircare.bootstrap import Container
    from fhircare.config import Settings

log = logging.getLogger("fhircare.sync")


Notified = tuple[str, str, str | None]  # (type, id, versionId) a notification names


def sync_cycle(container: Container, notified: Notified | None = None) -> dict[str, int]:
    """Pull, process the finished discharges not yet processed (whatever announced them,
    or nothing did), then push (so their outputs reach the server). Returns counts only.

    Every read bypasses HAPI's search cache, so a discharge is reconciled on the data HAPI
    holds now. `notified` (the resource a Subscription delivered) is then read on its own
    if the pull did not bring that version (its type is not pulled, for instance)."""
    from fhircare.remote.factory import remote_client
    from fhircare.remote.sync import pull, pull_resource, push

    settings = container.settings
    types = [t.strip() for t in settings.sync_types.split(",") if t.strip()]
    with container.sync_lock:
        client = remote_client(settings)
        try:
            store, policy = container.store, settings.sync_policy
            pulled = pull(store, client, types=types, policy=policy)
            fetched = pulled.fetched
            if notified is not None:
                rtype, rid, version = notified
                fetched += pull_resource(
                    store, client, rtype, rid, version=version, policy=policy
                ).fetched
            processed = process_missed_discharges(container)
            pushed = push(store, client, batch_size=settings.sync_batch_size, policy=policy)
        finally:
            client.close()
    return {"pulled": fetched, "pushed": pushed.pushed, "discharges": processed}


def process_missed_discharges(container: Container) -> int:
    """Process every finished discharge without a "processed" marker (a notification that
    never came, a handler that failed), and undo every processed one whose Encounter is no
    longer finished (written by a pull, which does not run the bus); one failing discharge
    does not stop the others."""
    from fhircare.transitions import discharge

    settings = container.settings
    done = 0
    work = [(e, True) for e in discharge.find_unprocessed(container.store)]
    work += [(e, False) for e in discharge.find_reopened(container.store)]
    for encounter, finished in work:
        try:
            if finished:
                written = discharge.process_discharge(
                    container.store,
                    encounter,
                    care_manager=settings.care_manager,
                    window_days=settings.followup_window_days,
                )
            else:
                written = discharge.undo_discharge(
                    container.store, encounter, care_manager=settings.care_manager
                )
        except Exception as exc:  # reported without patient data; retried at the next sweep
            log.warning("discharge processing failed (%s); retried later", type(exc).__name__)
            continue
        container.bus.publish(container.store, written)
        done += 1
    return done


def sync_loop(container: Container, wake: asyncio.Event) -> Callable[[], Awaitable[None]]:
    interval = container.settings.sync_interval

    async def loop() -> None:
        while True:
            try:
                counts = await asyncio.to_thread(sync_cycle, container)
                metrics.SYNC_LAST_SUCCESS.set_to_current_time()
                log.info("sync: %s", counts)
            except Exception as exc:  # keep looping: the outbox keeps what was not pushed
                metrics.SYNC_FAILURES.inc()
                log.warning("sync failed (%s); retrying in %.0f s", type(exc).__name__, interval)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval)

    return loop


def sweep_loop(container: Container) -> Callable[[], Awaitable[None]]:
    """At start and then every FHIRCARE_SWEEP_INTERVAL seconds: missed discharges."""
    interval = container.settings.sweep_interval

    async def loop() -> None:
        while True:
            try:
                await asyncio.to_thread(process_missed_discharges, container)
            except Exception as exc:  # keep sweeping; nothing acknowledged depends on it
                log.warning("discharge sweep failed (%s)", type(exc).__name__)
            await asyncio.sleep(interval)

    return loop


def register_subscription(settings: Settings) -> dict:
    """Create (once) the rest-hook Subscription of FHIRCARE_SUBSCRIBE_ENDPOINT on HAPI."""
    from fhircare.remote.factory import remote_client
    from fhircare.remote.sync import subscribe

    secret = settings.webhook_secret
    client = remote_client(settings)
    try:
        return subscribe(
            client,
            criteria=settings.subscribe_criteria,
            endpoint=str(settings.subscribe_endpoint),
            header=f"Authorization: Bearer {secret}" if secret else None,
        )
    finally:
        client.close()


def subscription_loop(
    container: Container, report: Callable[[str], None], *, max_delay: float = 60.0
) -> Callable[[], Awaitable[None]]:
    """At start: register the Subscription, retrying with backoff while HAPI is not up
    yet (as in docker compose); `report` gets the state for /ready. A HAPI that accepts but
    never activates it (rest-hook off) is reported with the setting to enable, and tried
    again every `max_delay` seconds (the Subscription is deleted each time)."""
    from fhircare.remote.sync import SubscriptionNotActive

    async def loop() -> None:
        delay = 1.0
        while True:
            try:
                sub = await asyncio.to_thread(register_subscription, container.settings)
            except SubscriptionNotActive as exc:  # HAPI up, but rest-hook off: say which
                report(f"not active: {exc.diagnostics}")  # setting; retry now and then
                log.warning("Subscription not active: %s", exc.diagnostics)
                delay = max_delay
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # HAPI still starting, or refusing: retried
                report(f"pending ({type(exc).__name__})")
                log.warning(
                    "Subscription not registered yet (%s); retrying in %.0f s",
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
                continue
            report(f"active (Subscription/{sub['id']})")
            log.info(
                "Subscription/%s active: %s -> %s",
                sub["id"],
                container.settings.subscribe_criteria,
                container.settings.subscribe_endpoint,
            )
            return

    return loop
