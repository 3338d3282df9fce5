"""Capacity per node: what can never fit, where a job goes, bookings moved and released."""

from __future__ import annotations

import pytest

from covey.governor import NANO, Demand, Governor, Usage, eligible, foreign_usage, matches
from covey.records import NodeRecord, TaskRecord

GIB = 1024**3


def node(
    ident: str,
    cpus: float = 2,
    memory: int = 4 * GIB,
    *,
    hostname: str | None = None,
    role: str = "worker",
    availability: str = "active",
    state: str = "ready",
    labels: dict[str, str] | None = None,
    engine_labels: dict[str, str] | None = None,
) -> NodeRecord:
    return NodeRecord(
        id=ident,
        hostname=hostname or f"host-{ident}",
        role=role,
        availability=availability,
        state=state,
        nano_cpus=int(cpus * NANO),
        memory=memory,
        labels=labels or {},
        engine_labels=engine_labels or {},
    )


def cpus(n: float, memory: int = 0, *constraints: str) -> Demand:
    return Demand(int(n * NANO), memory, constraints)


def governor(*nodes: NodeRecord, max_concurrent: int | None = None) -> Governor:
    gov = Governor(max_concurrent)
    gov.set_nodes(nodes)
    return gov


# -- never_fits -----------------------------------------------------------------------------------


def test_fits_somewhere_is_none() -> None:
    gov = governor(node("a", 1), node("b", 4))
    assert gov.never_fits(cpus(3)) is None
    assert gov.never_fits(Demand()) is None


def test_too_big_names_the_largest_node() -> None:
    gov = governor(node("a", 1, GIB, hostname="small"), node("b", 4, 8 * GIB, hostname="big"))
    reason = gov.never_fits(cpus(64, GIB))
    assert reason is not None
    assert "64 CPU" in reason
    assert "big" in reason
    assert "4 CPU" in reason
    assert "8.0 GiB" in reason
    assert "small" not in reason


def test_too_much_memory_names_the_largest_node() -> None:
    gov = governor(node("a", 2, 2 * GIB, hostname="only"))
    reason = gov.never_fits(Demand(0, 3 * GIB))
    assert reason is not None
    assert "3.0 GiB" in reason
    assert "only" in reason
    assert "2.0 GiB" in reason


def test_the_largest_node_is_the_largest_eligible_one() -> None:
    gov = governor(
        node("a", 8, hostname="huge", labels={"gpu": "no"}),
        node("b", 2, hostname="gpu-box", labels={"gpu": "yes"}),
    )
    reason = gov.never_fits(cpus(4, 0, "node.labels.gpu==yes"))
    assert reason is not None
    assert "gpu-box" in reason
    assert "huge" not in reason


def test_drained_nodes_do_not_count() -> None:
    gov = governor(node("a", 8, availability="drain"), node("b", 1))
    assert gov.never_fits(cpus(4)) is not None
    assert governor(node("a", availability="drain")).never_fits(cpus(1)) == (
        "the swarm has no active node"
    )


def test_no_node_matches_names_the_constraints() -> None:
    gov = governor(node("a", hostname="h1"))
    reason = gov.never_fits(cpus(0, 0, "node.hostname==nosuch"))
    assert reason is not None
    assert reason.startswith("no node matches")
    assert "node.hostname==nosuch" in reason


def test_a_node_that_is_down_still_might_come_back() -> None:
    """never_fits is about the cluster's shape; a down node is only unusable for now."""
    gov = governor(node("a", 4, state="down"))
    assert gov.never_fits(cpus(2)) is None
    assert gov.admit("j", cpus(2)) is None


# -- constraints ----------------------------------------------------------------------------------


N = node(
    "n1",
    hostname="Worker-1",
    role="manager",
    labels={"zone": "east", "disk": "ssd"},
    engine_labels={"kernel": "6"},
)


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        ("node.id==n1", True),
        ("node.id==n2", False),
        ("node.hostname==Worker-1", True),
        ("node.hostname==worker-1", True),  # case-insensitive, as swarm compares
        ("node.hostname!=worker-1", False),
        ("node.hostname!=other", True),
        ("node.role==manager", True),
        ("node.role==worker", False),
        ("node.platform.os==linux", True),
        ("node.platform.arch==x86_64", True),
        ("node.labels.zone==east", True),
        ("node.labels.zone==west", False),
        ("node.labels.zone!=west", True),
        ("node.labels.zone!=east", False),
        ("node.labels.nosuch==1", False),
        ("node.labels.nosuch!=1", True),  # a missing label is "not equal"
        ("engine.labels.kernel==6", True),
        ("engine.labels.kernel!=6", False),
        ("engine.labels.zone==east", False),  # node labels are not engine labels
        (" node.labels.disk == ssd ", True),
        ("node.unknown==x", False),
    ],
)
def test_matches(constraint: str, expected: bool) -> None:
    assert matches(N, constraint) is expected


def test_eligible_needs_every_constraint() -> None:
    assert eligible(N, Demand(constraints=("node.labels.zone==east", "node.role==manager")))
    assert not eligible(N, Demand(constraints=("node.labels.zone==east", "node.role==worker")))
    assert eligible(N, Demand())


def test_admit_only_on_matching_nodes() -> None:
    gov = governor(node("a", 8, labels={"zone": "east"}), node("b", 1, labels={"zone": "west"}))
    assert gov.admit("j1", cpus(0.5, 0, "node.labels.zone==west")) == "b"
    assert gov.admit("j2", cpus(0.5, 0, "node.labels.zone==west")) == "b"
    assert gov.admit("j3", cpus(0.5, 0, "node.labels.zone==west")) is None
    assert gov.admit("j4", cpus(0.5, 0, "node.labels.zone!=west")) == "a"


# -- admit ----------------------------------------------------------------------------------------


def test_admit_spreads_over_the_freest_node() -> None:
    gov = governor(node("a", 2), node("b", 2))
    first = gov.admit("j1", cpus(1))
    second = gov.admit("j2", cpus(1))
    assert {first, second} == {"a", "b"}
    assert gov.free("a") == Usage(NANO, 4 * GIB)
    assert gov.free("b") == Usage(NANO, 4 * GIB)


def test_admit_prefers_more_free_cpu() -> None:
    gov = governor(node("a", 1), node("b", 3))
    assert gov.admit("j1", cpus(1)) == "b"
    assert gov.admit("j2", cpus(1)) == "b"
    # a and b now have one CPU free each: one job goes to each
    third = gov.admit("j3", cpus(1))
    fourth = gov.admit("j4", cpus(1))
    assert {third, fourth} == {"a", "b"}
    assert gov.admit("j5", cpus(0.1)) is None


def test_admit_refuses_when_full_and_admits_after_release() -> None:
    gov = governor(node("a", 2, 4 * GIB))
    assert gov.admit("j1", cpus(1.5)) == "a"
    assert gov.admit("j2", cpus(1)) is None
    assert not gov.booked("j2")
    assert gov.admit("j3", cpus(0.5)) == "a"
    assert gov.free("a").nano_cpus == 0
    assert gov.release("j1")
    assert gov.admit("j2", cpus(1)) == "a"


def test_memory_is_a_limit_too() -> None:
    gov = governor(node("a", 8, 4 * GIB))
    assert gov.admit("j1", Demand(0, 3 * GIB)) == "a"
    assert gov.admit("j2", Demand(0, 2 * GIB)) is None
    assert gov.admit("j3", Demand(0, GIB)) == "a"
    assert gov.free("a").memory == 0


def test_admit_is_idempotent_per_key() -> None:
    gov = governor(node("a", 1))
    assert gov.admit("j1", cpus(1)) == "a"
    assert gov.admit("j1", cpus(1)) == "a"
    assert gov.admitted == 1


def test_zero_demand_jobs_are_limited_only_by_max_concurrent() -> None:
    gov = governor(node("a", 1), max_concurrent=3)
    assert [gov.admit(f"j{i}", Demand()) for i in range(4)] == ["a", "a", "a", None]
    gov.release("j0")
    assert gov.admit("j3", Demand()) == "a"


def test_unlimited_zero_demand() -> None:
    gov = governor(node("a", 1))
    assert all(gov.admit(f"j{i}", Demand()) == "a" for i in range(500))
    assert gov.admitted == 500


@pytest.mark.parametrize(
    ("state", "availability"), [("down", "active"), ("ready", "drain"), ("ready", "pause")]
)
def test_unusable_nodes_get_nothing(state: str, availability: str) -> None:
    gov = governor(node("a", 8, state=state, availability=availability), node("b", 1))
    assert gov.admit("j1", cpus(1)) == "b"
    assert gov.admit("j2", cpus(1)) is None


def test_foreign_reservations_reduce_free_capacity() -> None:
    gov = Governor()
    gov.set_nodes([node("a", 2, 4 * GIB)], {"a": Usage(int(1.5 * NANO), GIB)})
    assert gov.free("a") == Usage(NANO // 2, 3 * GIB)
    assert gov.admit("j1", cpus(1)) is None
    assert gov.admit("j2", cpus(0.5)) == "a"


def test_no_nodes_admits_nothing() -> None:
    gov = Governor()
    assert gov.admit("j", Demand()) is None
    assert gov.never_fits(Demand()) == "the swarm has no active node"


# -- place, hold, release -------------------------------------------------------------------------


def test_place_moves_the_booking_to_where_the_task_went() -> None:
    gov = governor(node("a", 2), node("b", 2))
    assert gov.admit("j1", cpus(2)) == "b"  # a tie: the highest node id wins
    gov.place("j1", "a")
    assert gov.free("a") == Usage(0, 4 * GIB)
    assert gov.free("b") == Usage(2 * NANO, 4 * GIB)
    assert gov.admit("j2", cpus(2)) == "b"


def test_place_ignores_unknown_nodes_and_keys() -> None:
    gov = governor(node("a", 2))
    gov.admit("j1", cpus(1))
    gov.place("j1", "nosuch")
    gov.place("j1", None)
    gov.place("other", "a")
    assert gov.free("a").nano_cpus == NANO
    assert not gov.booked("other")


def test_hold_books_even_without_room() -> None:
    gov = governor(node("a", 1))
    gov.hold("adopted", cpus(4), "a")
    assert gov.booked("adopted")
    assert gov.free("a").nano_cpus == -3 * NANO
    assert gov.admit("j", cpus(0.1)) is None
    gov.hold("unknown-node", Demand(), "zzz")
    assert gov.booked("unknown-node")


def test_release() -> None:
    gov = governor(node("a", 1), max_concurrent=1)
    gov.admit("j1", cpus(1))
    assert gov.admitted == 1
    assert gov.release("j1")
    assert not gov.release("j1")
    assert gov.admitted == 0
    assert gov.free("a") == Usage(NANO, 4 * GIB)


def test_set_nodes_keeps_bookings() -> None:
    gov = governor(node("a", 2))
    gov.admit("j1", cpus(1))
    gov.set_nodes([node("a", 2)], {"a": Usage(NANO, 0)})
    assert gov.free("a").nano_cpus == 0
    assert gov.node("a") is not None
    assert gov.node(None) is None
    assert [n.id for n in gov.nodes] == ["a"]


# -- foreign_usage --------------------------------------------------------------------------------


def rtask(
    attempt: str | None,
    state: str = "running",
    *,
    node_id: str | None = "a",
    desired: str = "running",
    cpus_: float = 1,
    memory: int = GIB,
) -> TaskRecord:
    return TaskRecord(
        id=f"t-{attempt}-{state}",
        service_id="s",
        node_id=node_id,
        state=state,
        desired_state=desired,
        err=None,
        message=None,
        exit_code=None,
        container_id=None,
        attempt=attempt,
        reserve_nano_cpus=int(cpus_ * NANO),
        reserve_memory=memory,
    )


def test_foreign_usage_sums_other_users_live_tasks_per_node() -> None:
    ours = {"job1-1"}
    tasks = [
        rtask(None, "running"),
        rtask(None, "starting", cpus_=0.5, memory=0),
        rtask(None, "assigned", node_id="b"),
        rtask("job1-1", "running", cpus_=8),  # ours: booked already
        rtask("other-store-1", "running", cpus_=0.25, memory=0),  # not ours: foreign
        rtask(None, "pending", node_id=None),  # not placed: reserves nothing yet
        rtask(None, "new"),  # not reserving yet
        rtask(None, "complete"),
        rtask(None, "failed"),
        rtask(None, "running", desired="shutdown"),  # on its way out
    ]
    usage = foreign_usage(tasks, lambda a: a in ours)
    assert usage == {
        "a": Usage(int(1.75 * NANO), GIB),
        "b": Usage(NANO, GIB),
    }


def test_foreign_usage_of_nothing() -> None:
    assert foreign_usage([], lambda a: False) == {}
