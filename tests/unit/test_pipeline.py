"""pipeline.py, pure: the verdict on one need, all needs of a job, the graph checks and the
Python builder's errors (the store's use of them is in test_gate.py)."""

from __future__ import annotations

import pytest

from covey.errors import SpecError
from covey.pipeline import (
    Condition,
    Pipeline,
    StageView,
    Verdict,
    check,
    combine,
    instance,
    items_of,
    validate,
    verdict,
)
from covey.spec import JobSpec

SPEC = JobSpec(image="busybox", command=("true",))
MET, WAIT, NEVER = Verdict.MET, Verdict.WAIT, Verdict.NEVER
RUNNING = StageView(open=True)
ALL_OK = StageView(open=False)
ONE_FAILED_RUNNING = StageView(open=True, not_ok="m-1 failed", any_failed=True)
ONE_FAILED_DONE = StageView(open=False, not_ok="m-1 failed", any_failed=True)
ONE_CANCELLED_DONE = StageView(open=False, not_ok="m-1 cancelled")
SKIPPED_STAGE = StageView(open=False, skipped_stage=True, reason="split failed")


@pytest.mark.parametrize(
    ("condition", "view", "expected"),
    [
        (Condition.SUCCEEDED, RUNNING, (WAIT, None)),
        (Condition.SUCCEEDED, ALL_OK, (MET, None)),
        (Condition.SUCCEEDED, ONE_FAILED_RUNNING, (NEVER, "m-1 failed")),  # fails fast
        (Condition.SUCCEEDED, ONE_CANCELLED_DONE, (NEVER, "m-1 cancelled")),
        (Condition.SUCCEEDED, SKIPPED_STAGE, (NEVER, "m was skipped (split failed)")),
        (Condition.EACH, ONE_FAILED_DONE, (NEVER, "m-1 failed")),
        (
            Condition.EACH,
            StageView(open=False, missing=True),
            (NEVER, "m has no instance to pair with"),
        ),
        (Condition.COMPLETED, ONE_FAILED_RUNNING, (WAIT, None)),  # waits for all
        (Condition.COMPLETED, ONE_FAILED_DONE, (MET, None)),
        (Condition.COMPLETED, SKIPPED_STAGE, (MET, None)),
        (Condition.FAILED, ONE_FAILED_RUNNING, (WAIT, None)),
        (Condition.FAILED, ONE_FAILED_DONE, (MET, None)),
        (Condition.FAILED, ALL_OK, (NEVER, "no instance of m failed")),
        (Condition.FAILED, ONE_CANCELLED_DONE, (NEVER, "no instance of m failed")),
        (Condition.FAILED, SKIPPED_STAGE, (NEVER, "m was skipped (split failed)")),
    ],
)
def test_verdict(
    condition: Condition, view: StageView, expected: tuple[Verdict, str | None]
) -> None:
    assert verdict(condition, view, "m") == expected


def test_combine_all_needs() -> None:
    assert combine([(MET, None), (MET, None)]) == (MET, None)
    assert combine([(MET, None), (WAIT, None)]) == (WAIT, None)
    assert combine([(WAIT, None), (NEVER, "a-1 failed"), (NEVER, "b")]) == (NEVER, "a-1 failed")
    assert combine([]) == (MET, None)


def test_items_are_the_non_blank_lines() -> None:
    assert items_of(b"a\n\n  \nb\r\nc") == ["a", "b", "c"]
    assert items_of(b"") == []
    assert items_of(b"\xff\n") == ["\ufffd"]


def test_an_instance_knows_its_index_and_item() -> None:
    one = instance(SPEC.with_changes(env=(("A", "1"),)), "count", 3, "part.03")
    assert (one.name, one.index, one.item) == ("count-3", 3, "part.03")
    assert one.env == (("A", "1"), ("COVEY_INDEX", "3"), ("COVEY_ITEM", "part.03"))


def test_the_builder_names_instances_and_tells_jobs_where_inputs_are() -> None:
    p = Pipeline()
    p.add("map", [SPEC, SPEC])
    reduce = p.add("reduce", SPEC, needs={"map": "completed"}, inputs=["map"])
    assert [s.name for s in p.stages[0].specs] == ["map-0", "map-1"]
    assert reduce.specs[0].name == "reduce"
    assert ("COVEY_INPUTS", "/covey/inputs") in reduce.specs[0].env
    assert reduce.needs[0].condition is Condition.COMPLETED and reduce.needs[0].inputs
    assert p.static_specs() == [*p.stages[0].specs, *reduce.specs]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda p: p.add("a", SPEC, needs={"x": "maybe"}),
            r"a\.needs\.x: 'maybe' is not a condition",
        ),
        (lambda p: p.add("a", SPEC, needs=["x"], inputs=["y"]), r"inputs: 'y' is not in needs"),
        (lambda p: p.add("a", [SPEC, SPEC], for_each="x"), r"for_each takes one template"),
        (lambda p: p.add("a", []), r"no jobs"),
        (lambda p: p.add("bad name", SPEC), r"stages\[0\]\.name"),
    ],
)
def test_the_builder_refuses_at_once(build: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        build(Pipeline())  # type: ignore[operator]


def test_graph_problems_name_the_stage_and_the_need() -> None:
    p = Pipeline()
    p.add("a", SPEC)
    p.add("b", [SPEC, SPEC], needs={"a": "each"})
    p.add("c", SPEC, needs=["c"])
    problems = check(p.stages)
    assert [(q.stage, q.key, q.need) for q in problems] == [(1, "needs", "a"), (2, "needs", "c")]
    assert "'b' has 2 and 'a' has 1" in problems[0].message
    assert problems[1].message == "a job cannot need itself"
    with pytest.raises(SpecError, match=r"^stages\[1\]\.needs: 'each' pairs"):
        validate(p)


def test_a_fan_out_source_must_be_a_succeeded_need_of_one_job() -> None:
    p = Pipeline()
    p.add("src", [SPEC, SPEC])
    p.add("fan", SPEC, needs={"src": "completed"}, for_each="src")
    (problem,) = check(p.stages)
    assert (problem.stage, problem.key) == (1, "for_each")
    assert "must be in needs (as succeeded)" in problem.message


def test_each_between_fan_outs_over_one_source_pairs() -> None:
    p = Pipeline()
    p.add("src", SPEC)
    p.add("x", SPEC, needs=["src"], for_each="src")
    p.add("y", SPEC, needs={"src": "succeeded", "x": "each"}, for_each="src")
    assert check(p.stages) == []


def test_duplicate_stage_names_are_refused() -> None:
    p = Pipeline()
    p.add("a", SPEC)
    p.add("a", SPEC)
    with pytest.raises(SpecError, match=r"stages\[1\]\.name: duplicate stage name 'a'"):
        validate(p)
