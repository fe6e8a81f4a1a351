"""The same FHIR API tests with the real HAPI server as the store (FHIRCARE_STORE=hapi).

The functions are imported from test_fhir_api, so pytest runs them here a second time with
this module's `client` fixture. Only the tests that do not count resources server-wide are
shared: the HAPI server is shared by the whole session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fhircare.api.app import create_app
from fhircare.config import Settings
from tests.integration.test_fhir_api import (  # noqa: F401 - collected here again
    pid,
    test_bad_input_gets_an_operation_outcome,
    test_batch_runs_each_entry_on_its_own,
    test_conditional_create_returns_existing,
    test_conditional_update_and_delete,
    test_invalid_resource_names_the_failing_element,
    test_prefer_minimal_and_outcome,
    test_search_params_paging_sort_and_include,
    test_transaction_is_atomic_and_rewrites_urn_references,
    test_update_with_client_id_creates_and_if_match_guards,
)

pytestmark = pytest.mark.hapi


@pytest.fixture
def client(hapi_base_url: str, tmp_path) -> Iterator[TestClient]:  # noqa: ANN001
    settings = Settings(
        data=tmp_path / "unused",
        store="hapi",
        hapi_url=hapi_base_url,
        base_url="http://testserver/fhir",
        seed_definitions=False,
        audit=False,
    )
    with TestClient(create_app(settings)) as c:
        yield c
