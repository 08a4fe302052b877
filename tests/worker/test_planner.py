"""The slot planner: what each flow may claim, from what the dispatcher holds (no database)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.worker import planner

THREADS = 16
SHARED = planner.SHARED


def make(holding: dict[str, int] | None = None) -> planner.SlotPlanner:
    slots = planner.SlotPlanner(THREADS)
    for flow, count in (holding or {}).items():
        slots.claimed(flow, [flow or "default"] * count)
    return slots


def test_the_shared_flow_alone_claims_ahead_into_every_slot() -> None:
    slots = make({SHARED: 5})

    room = slots.room([], ())

    assert room == planner.Room(2 * THREADS - 5, {})


def test_a_limited_endpoint_with_work_gets_its_share_of_idle_threads_and_caps_the_shared_flow() -> (
    None
):
    slots = make({SHARED: 4})

    room = slots.room(["billing"], {"billing"})

    assert room.held == {"billing": THREADS // 2}
    assert room.shared == THREADS - THREADS // 2 - 4, "no claiming ahead while billing has work"


def test_a_limited_endpoint_alone_takes_every_idle_thread() -> None:
    slots = make({"billing": 3})

    assert slots.room(["billing"], {"billing"}).held == {"billing": THREADS - 3}


def test_a_limited_endpoint_never_gets_a_busy_thread() -> None:
    # The shared flow claimed ahead before billing had work: no thread is idle.
    slots = make({SHARED: 2 * THREADS})

    room = slots.room(["billing"], {"billing"})

    assert room == planner.Room(0, {"billing": 0})
    slots.released(SHARED, ["default"] * (THREADS + 3))
    assert slots.room(["billing"], {"billing"}).held == {"billing": 3}


def test_an_endpoint_without_due_work_gets_no_room_and_leaves_the_shared_flow_alone() -> None:
    slots = make()

    assert slots.room(["billing", "mail"], ()) == planner.Room(
        2 * THREADS, {"billing": 0, "mail": 0}
    )


def test_shares_are_equal_between_the_flows_with_work() -> None:
    slots = make()

    room = slots.room(["billing", "mail", "reports"], {"billing", "mail", "reports"})

    assert room.held == {"billing": 4, "mail": 4, "reports": 4}
    assert room.shared == THREADS - 3 * 4


def test_releasing_more_than_held_leaves_nothing_negative() -> None:
    slots = make({"billing": 2})

    slots.released("billing", ["billing"] * 5)

    assert slots.holding("billing") == 0 and slots.holding() == 0


def test_pressed_when_every_slot_is_held_or_a_limited_endpoint_holds_any() -> None:
    assert not make({SHARED: 2 * THREADS - 1}).pressed()
    assert make({SHARED: 2 * THREADS}).pressed()
    assert make({"billing": 1}).pressed()


def test_an_endpoint_alone_in_the_shared_flow_may_fill_every_slot() -> None:
    assert make().shares() == ({}, 2 * THREADS)
    slots = make({SHARED: 5})

    assert slots.shares() == ({"default": 2 * THREADS - 5}, THREADS // 2)


def test_endpoints_in_the_shared_flow_keep_to_equal_shares_of_the_threads() -> None:
    slots = planner.SlotPlanner(THREADS)
    slots.claimed(SHARED, ["slow"] * THREADS + ["fast"] * 3)

    rooms, newcomer = slots.shares()

    assert rooms == {"slow": 0, "fast": THREADS // 2 - 3}
    assert newcomer == THREADS // 3, "an endpoint whose job comes due gets a share at once"
    slots.released(SHARED, ["fast"] * 3)
    assert slots.shares() == ({"slow": THREADS}, THREADS // 2)


names = st.sampled_from(["a", "b", "c", "d"])


@settings(deadline=None, database=None)
@given(
    holding=st.dictionaries(st.sampled_from([SHARED, "a", "b", "c", "d"]), st.integers(0, 40)),
    held=st.lists(names, unique=True),
    waiting=st.sets(names),
)
def test_rooms_never_overcommit_threads_or_slots(
    holding: dict[str, int], held: list[str], waiting: set[str]
) -> None:
    slots = make(holding)
    total = sum(holding.values())

    room = slots.room(held, waiting)

    assert set(room.held) == set(held)
    assert all(count >= 0 for count in room.held.values()) and room.shared >= 0
    # A limited endpoint's claim is a start: no more than the threads idle now.
    assert sum(room.held.values()) <= max(0, THREADS - total)
    assert all(room.held[name] == 0 for name in held if name not in waiting)
    assert room.shared <= max(0, 2 * THREADS - holding.get(SHARED, 0))
    if not any(name in waiting or holding.get(name, 0) for name in held):
        assert room.shared == max(0, 2 * THREADS - holding.get(SHARED, 0))
