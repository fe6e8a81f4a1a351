"""FHIR search from the registry's SearchParameters: parse, match, run, sort.

* `query`: a query string into typed criteria (400 for what is refused);
* `values`: element values normalised per parameter type;
* `match`: does a resource satisfy a criterion (R4 rules per type, modifier and prefix);
* `engine`: a query over a store's `SearchSource` (indexes narrow, every match checked).
"""

from fhircare.fhir.search.engine import SearchSource, execute, sort_resources
from fhircare.fhir.search.match import extract, matches
from fhircare.fhir.search.query import (
    CONTROL_PARAMS,
    Criterion,
    Has,
    InList,
    Query,
    SortKey,
    parse_query,
)
from fhircare.fhir.search.values import date_range

__all__ = [
    "CONTROL_PARAMS",
    "Criterion",
    "Has",
    "InList",
    "Query",
    "SearchSource",
    "SortKey",
    "date_range",
    "execute",
    "extract",
    "matches",
    "parse_query",
    "sort_resources",
]
