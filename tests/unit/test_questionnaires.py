"""QuestionnaireResponse validation against its Questionnaire (fhircare.care.questionnaires)."""

from __future__ import annotations

from typing import Any

import pytest

from fhircare.care.definitions import definition
from fhircare.care.questionnaires import resolve_questionnaire, validate_response
from fhircare.fhir.errors import NotFound, Unprocessable
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore

LOINC = "http://loinc.org"
PHQ9_ITEMS = [
    "44250-9", "44255-8", "44259-0", "44254-1", "44251-7",
    "44258-2", "44252-5", "44253-3", "44260-8",
]  # fmt: skip
PHQ_ANSWERS = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"]
TEST_Q = "http://example.org/Questionnaire/test"


def coded(code: str, system: str = LOINC) -> dict[str, Any]:
    return {"valueCoding": {"system": system, "code": code}}


def phq9_response(scores: list[int], status: str = "completed") -> dict[str, Any]:
    items = [
        {"linkId": link, "answer": [coded(PHQ_ANSWERS[s])]}
        for link, s in zip(PHQ9_ITEMS, scores, strict=False)
    ]
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "http://fhircare.org/fhir/Questionnaire/phq-9",
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "item": items,
    }


def reject(qr: dict[str, Any], questionnaire: dict[str, Any]) -> Unprocessable:
    with pytest.raises(Unprocessable) as info:
        validate_response(qr, questionnaire)
    return info.value


@pytest.fixture
def phq9() -> dict[str, Any]:
    q = definition("Questionnaire", "phq-9")
    assert q is not None
    return q


def test_complete_phq9_is_valid(phq9: dict[str, Any]) -> None:
    validate_response(phq9_response([1, 2, 0, 3, 1, 0, 2, 1, 0]), phq9)


def test_missing_required_item_is_rejected_with_its_link_id(phq9: dict[str, Any]) -> None:
    err = reject(phq9_response([1, 1, 1, 1, 1, 1, 1, 1]), phq9)  # item 9 missing
    assert err.status == 422
    assert err.expression == ["QuestionnaireResponse"]
    assert "44260-8" in err.diagnostics and "Required" in err.diagnostics


def test_in_progress_response_may_leave_required_items_out(phq9: dict[str, Any]) -> None:
    validate_response(phq9_response([1, 1], status="in-progress"), phq9)


def test_wrong_answer_type_names_the_answer(phq9: dict[str, Any]) -> None:
    qr = phq9_response([0] * 9)
    qr["item"][2]["answer"] = [{"valueString": "sometimes"}]
    err = reject(qr, phq9)
    assert err.expression == ["QuestionnaireResponse.item[2].answer[0]"]
    assert "44259-0" in err.diagnostics and "valueCoding" in err.diagnostics


def test_coding_outside_the_answer_options_is_rejected(phq9: dict[str, Any]) -> None:
    qr = phq9_response([0] * 9)
    qr["item"][4]["answer"] = [coded("LA6572-7")]
    err = reject(qr, phq9)
    assert err.expression == ["QuestionnaireResponse.item[4].answer[0]"]
    assert "LA6572-7" in err.diagnostics


def test_second_answer_to_a_non_repeating_item_is_rejected(phq9: dict[str, Any]) -> None:
    qr = phq9_response([0] * 9)
    qr["item"][0]["answer"].append(coded("LA6569-3"))
    err = reject(qr, phq9)
    assert err.expression == ["QuestionnaireResponse.item[0].answer[1]"]


def test_unknown_link_id_is_rejected(phq9: dict[str, Any]) -> None:
    qr = phq9_response([0] * 9)
    qr["item"].append({"linkId": "nope", "answer": [{"valueString": "x"}]})
    err = reject(qr, phq9)
    assert err.expression == ["QuestionnaireResponse.item[9]"]
    assert "nope" in err.diagnostics


def test_every_problem_is_reported(phq9: dict[str, Any]) -> None:
    qr = phq9_response([0] * 7)
    qr["item"][0]["answer"] = [{"valueInteger": 2}]
    err = reject(qr, phq9)
    outcome = err.outcome()
    diagnostics = " ".join(i["diagnostics"] for i in outcome["issue"])
    assert len(outcome["issue"]) == 3  # wrong type + two required items missing
    assert "44253-3" in diagnostics and "44260-8" in diagnostics


def test_answer_to_a_disabled_item_is_rejected(phq9: dict[str, Any]) -> None:
    qr = phq9_response([0] * 9)  # no problems checked: the difficulty question is disabled
    qr["item"].append({"linkId": "69722-7", "answer": [coded("LA6573-5")]})
    err = reject(qr, phq9)
    assert err.expression == ["QuestionnaireResponse.item[9].answer[0]"]
    assert "69722-7" in err.diagnostics and "disabled" in err.diagnostics


def test_enable_behavior_any_enables_on_one_matching_condition(phq9: dict[str, Any]) -> None:
    qr = phq9_response([0, 0, 0, 0, 0, 0, 0, 1, 0])
    qr["item"].append({"linkId": "69722-7", "answer": [coded("LA6573-5")]})
    validate_response(qr, phq9)


def test_questionnaire_url_must_match(phq9: dict[str, Any]) -> None:
    qr = phq9_response([0] * 9)
    qr["questionnaire"] = "http://fhircare.org/fhir/Questionnaire/phq-2"
    err = reject(qr, phq9)
    assert err.expression == ["QuestionnaireResponse.questionnaire"]


def test_literal_questionnaire_reference_is_accepted(phq9: dict[str, Any]) -> None:
    qr = phq9_response([0] * 9)
    qr["questionnaire"] = "Questionnaire/phq-9"
    validate_response(qr, phq9)


def test_metadata_only_questionnaire_constrains_only_the_reference() -> None:
    q = {"resourceType": "Questionnaire", "url": TEST_Q, "status": "active"}
    validate_response(
        {"questionnaire": TEST_Q, "status": "completed", "item": [{"linkId": "x"}]}, q
    )
    assert reject({"questionnaire": "http://other", "status": "completed"}, q)


def test_exclusive_option_cannot_be_combined() -> None:
    q = definition("Questionnaire", "ahc-hrsn-core")
    assert q is not None
    qr = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": q["url"],
        "status": "in-progress",
        "item": [
            {
                "linkId": "living-situation",
                "item": [
                    {"linkId": "96778-6", "answer": [coded("LA28580-1"), coded("LA9-3")]},
                ],
            }
        ],
    }
    err = reject(qr, q)
    assert err.expression == ["QuestionnaireResponse.item[0].item[0].answer[1]"]


# ---- a small Questionnaire exercising enableWhen operators, groups and nesting -----------------


def sample_questionnaire() -> dict[str, Any]:
    return {
        "resourceType": "Questionnaire",
        "url": TEST_Q,
        "status": "active",
        "item": [
            {"linkId": "smoker", "type": "boolean", "required": True},
            {
                "linkId": "smoking",
                "type": "group",
                "required": True,
                "enableWhen": [{"question": "smoker", "operator": "=", "answerBoolean": True}],
                "item": [
                    {"linkId": "packs", "type": "decimal", "required": True},
                    {"linkId": "since", "type": "date"},
                ],
            },
            {"linkId": "age", "type": "integer", "required": True},
            {
                "linkId": "older",
                "type": "string",
                "enableWhen": [{"question": "age", "operator": ">=", "answerInteger": 65}],
            },
            {
                "linkId": "younger",
                "type": "string",
                "enableWhen": [{"question": "age", "operator": "<", "answerInteger": 18}],
            },
            {
                "linkId": "heavy",
                "type": "boolean",
                "enableWhen": [
                    {"question": "packs", "operator": ">", "answerDecimal": 1},
                    {"question": "since", "operator": "<=", "answerDate": "2000-01-01"},
                ],
                "enableBehavior": "all",
            },
            {
                "linkId": "asked-age",
                "type": "boolean",
                "enableWhen": [{"question": "age", "operator": "exists", "answerBoolean": False}],
            },
            {
                "linkId": "meds",
                "type": "group",
                "repeats": True,
                "item": [
                    {
                        "linkId": "med",
                        "type": "string",
                        "required": True,
                        "item": [
                            {
                                "linkId": "dose",
                                "type": "quantity",
                                "required": True,
                            }
                        ],
                    },
                    {"linkId": "prn", "type": "boolean"},
                    {
                        "linkId": "prn-reason",
                        "type": "string",
                        "enableWhen": [{"question": "prn", "operator": "=", "answerBoolean": True}],
                    },
                ],
            },
        ],
    }


def answer(link: str, **value: Any) -> dict[str, Any]:
    ((key, v),) = value.items()
    return {"linkId": link, "answer": [{key: v}]}


def response(*items: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": TEST_Q,
        "status": status,
        "item": list(items),
    }


def smoking(*children: dict[str, Any]) -> dict[str, Any]:
    return {"linkId": "smoking", "item": list(children)}


def test_required_item_inside_an_enabled_group_is_required() -> None:
    q = sample_questionnaire()
    err = reject(
        response(
            answer("smoker", valueBoolean=True),
            smoking(answer("since", valueDate="1990-05-01")),
            answer("age", valueInteger=40),
        ),
        q,
    )
    assert err.expression == ["QuestionnaireResponse.item[1]"]
    assert "packs" in err.diagnostics


def test_required_enabled_group_must_be_present() -> None:
    err = reject(
        response(answer("smoker", valueBoolean=True), answer("age", valueInteger=40)),
        sample_questionnaire(),
    )
    assert "'smoking'" in err.diagnostics


def test_disabled_group_is_not_required_and_cannot_be_answered() -> None:
    q = sample_questionnaire()
    validate_response(
        response(answer("smoker", valueBoolean=False), answer("age", valueInteger=40)), q
    )
    err = reject(
        response(
            answer("smoker", valueBoolean=False),
            smoking(answer("packs", valueDecimal=2)),
            answer("age", valueInteger=40),
        ),
        q,
    )
    assert err.expression == ["QuestionnaireResponse.item[1].item[0].answer[0]"]


@pytest.mark.parametrize(
    ("age", "older", "younger"),
    [(70, True, False), (65, True, False), (64, False, False), (17, False, True)],
)
def test_ordering_operators(age: int, older: bool, younger: bool) -> None:
    q = sample_questionnaire()
    base = [answer("smoker", valueBoolean=False), answer("age", valueInteger=age)]
    for link, enabled in (("older", older), ("younger", younger)):
        qr = response(*base, answer(link, valueString="x"))
        if enabled:
            validate_response(qr, q)
        else:
            assert link in reject(qr, q).diagnostics


@pytest.mark.parametrize(
    ("packs", "since", "enabled"),
    [(2, "1990-01-01", True), (2, "2005-01-01", False), (1, "1990-01-01", False)],
)
def test_enable_behavior_all(packs: float, since: str, enabled: bool) -> None:
    qr = response(
        answer("smoker", valueBoolean=True),
        smoking(answer("packs", valueDecimal=packs), answer("since", valueDate=since)),
        answer("age", valueInteger=50),
        answer("heavy", valueBoolean=True),
    )
    if enabled:
        validate_response(qr, sample_questionnaire())
    else:
        assert "heavy" in reject(qr, sample_questionnaire()).diagnostics


def test_exists_operator() -> None:
    q = sample_questionnaire()
    validate_response(
        response(
            answer("smoker", valueBoolean=False),
            answer("asked-age", valueBoolean=True),
            status="in-progress",
        ),
        q,
    )
    assert (
        "asked-age"
        in reject(
            response(
                answer("smoker", valueBoolean=False),
                answer("age", valueInteger=30),
                answer("asked-age", valueBoolean=True),
            ),
            q,
        ).diagnostics
    )


def med(name: str, *, prn: bool | None = None, reason: str | None = None, dose: bool = True):
    child: dict[str, Any] = {"valueString": name}
    if dose:
        child["item"] = [{"linkId": "dose", "answer": [{"valueQuantity": {"value": 5}}]}]
    items: list[dict[str, Any]] = [{"linkId": "med", "answer": [child]}]
    if prn is not None:
        items.append(answer("prn", valueBoolean=prn))
    if reason is not None:
        items.append(answer("prn-reason", valueString=reason))
    return {"linkId": "meds", "item": items}


def test_enable_when_is_resolved_inside_each_repeating_group_instance() -> None:
    q = sample_questionnaire()
    base = [answer("smoker", valueBoolean=False), answer("age", valueInteger=50)]
    validate_response(response(*base, med("a", prn=True, reason="pain"), med("b", prn=False)), q)
    err = reject(response(*base, med("a", prn=True), med("b", prn=False, reason="pain")), q)
    assert err.expression == ["QuestionnaireResponse.item[3].item[2].answer[0]"]


def test_required_child_of_a_question_is_checked_under_its_answer() -> None:
    q = sample_questionnaire()
    base = [answer("smoker", valueBoolean=False), answer("age", valueInteger=50)]
    err = reject(response(*base, med("a", dose=False)), q)
    assert err.expression == ["QuestionnaireResponse.item[2].item[0].answer[0]"]
    assert "'dose'" in err.diagnostics


def test_not_equal_operator_on_a_multi_select() -> None:
    q = definition("Questionnaire", "care-intake")
    assert q is not None
    ci = "http://fhircare.org/fhir/CodeSystem/care-intake"

    def intake(barriers: list[str], details: bool) -> dict[str, Any]:
        group: dict[str, Any] = {
            "linkId": "barriers-group",
            "item": [{"linkId": "barriers", "answer": [coded(b, ci) for b in barriers]}],
        }
        if details:
            group["item"].append(answer("barrier-details", valueString="bus stopped running"))
        return {
            "resourceType": "QuestionnaireResponse",
            "questionnaire": q["url"],
            "status": "in-progress",
            "item": [group],
        }

    validate_response(intake(["transportation", "food"], True), q)
    validate_response(intake(["none"], False), q)
    err = reject(intake(["none"], True), q)
    assert err.expression == ["QuestionnaireResponse.item[0].item[1].answer[0]"]


def test_resolve_questionnaire_from_store_and_profiles(tmp_path) -> None:
    store = EmbeddedStore(tmp_path, fsync=False)
    try:
        assert resolve_questionnaire(store, "http://fhircare.org/fhir/Questionnaire/phq-9")["id"]
        found = resolve_questionnaire(store, "http://fhircare.org/fhir/Questionnaire/phq-2|1.0.0")
        assert found["id"] == "phq-2"
        with pytest.raises(NotFound):
            resolve_questionnaire(store, "http://fhircare.org/fhir/Questionnaire/phq-2|9.9")
        with pytest.raises(NotFound):
            resolve_questionnaire(store, "http://example.org/unknown")
        q = {"resourceType": "Questionnaire", "status": "active"}
        store.commit([WriteOp("update", "Questionnaire", id="local", resource=q)])
        assert resolve_questionnaire(store, "Questionnaire/local")["id"] == "local"
    finally:
        store.close()
