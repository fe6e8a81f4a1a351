"""Wiring: build the store, bus, services and registries once, from Settings."""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import FastAPI

from fhircare.api.operations import OperationRegistry
from fhircare.config import Settings
from fhircare.services.bundles import BundleProcessor
from fhircare.services.bus import MessageBus
from fhircare.services.resources import ResourceService
from fhircare.services.searching import Paging
from fhircare.store.base import Store

log = logging.getLogger("fhircare.terminology")


@dataclass
class Container:
    settings: Settings
    store: Store
    bus: MessageBus
    svc: ResourceService
    bundles: BundleProcessor
    operations: OperationRegistry
    paging: Paging
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)
    sync_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return self.settings.public_base()

    def install(self, app: FastAPI) -> None:
        """Attach state and routers to a FastAPI app."""
        from fhircare.api import wiring

        st = app.state
        st.settings = self.settings
        st.container = self
        st.svc = self.svc
        st.store = self.store
        st.bus = self.bus
        st.bundles = self.bundles
        st.operations = self.operations
        st.paging = self.paging
        st.base_url = self.base_url
        wiring.install(app, self)

    def close(self) -> None:
        for closer in reversed(self.closers):
            closer()
        self.store.close()


def open_store(settings: Settings) -> Store:
    if settings.store == "hapi":
        from fhircare.remote.factory import remote_store

        return remote_store(settings)
    from fhircare.store.embedded import EmbeddedStore

    return EmbeddedStore(
        settings.data,
        fsync=settings.fsync,
        referential_integrity=settings.enforce_referential_integrity_on_delete,
        shared=settings.workers > 1,
    )


def use_local_terminology(settings: Settings) -> None:
    """Reconciliation reads the data folder's RxNorm index first, when one was loaded."""
    from fhircare.terminology.rxnorm import open_local_index
    from fhircare.transitions.medications import use_local_index

    try:
        use_local_index(open_local_index(settings.data))
    except ValueError as exc:
        log.warning("%s; using the built-in drug table", exc)


def build_container(settings: Settings, store: Store | None = None) -> Container:
    use_local_terminology(settings)
    store = store or open_store(settings)
    bus = MessageBus()
    svc = ResourceService(store, bus)
    paging = Paging(settings.default_page_size, settings.max_page_size)
    container = Container(
        settings=settings,
        store=store,
        bus=bus,
        svc=svc,
        bundles=BundleProcessor(
            svc,
            base_url=settings.public_base(),
            paging=paging,
            max_entries=settings.max_bundle_entries,
        ),
        operations=OperationRegistry(),
        paging=paging,
    )
    from fhircare import domain_wiring

    domain_wiring.register(container)
    if settings.seed_definitions:
        seed_definitions(container)
    return container


def seed_definitions(container: Container) -> int:
    """Load the project's conformance resources (profiles/) into the store: each is created
    when absent and updated when its content changed, all in one commit."""
    from fhircare.care.definitions import load_profiles_dir
    from fhircare.store.base import WriteOp

    store = container.store
    ops = []
    for resource in load_profiles_dir():
        rtype, rid = resource["resourceType"], resource["id"]
        if store.exists(rtype, rid):
            current = store.read(rtype, rid)
            current.pop("meta", None)
            body = {k: v for k, v in resource.items() if k != "meta"}
            if current == body:
                continue
        ops.append(WriteOp("update", rtype, id=rid, resource=resource))
    if ops:
        store.commit(ops)
    return len(ops)
