"""The slot planner: what each flow may claim, from what the dispatcher holds (no database)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import tuning
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


def test_shared_endpoints_share_the_threads_the_limited_ones_leave() -> None:
    slots = make({"billing": 4})
    slots.claimed(SHARED, ["slow"] * 2)
    slots.saw_due(["slow", "quick"])

    room = slots.room(["billing"], {"billing"})
    rooms, newcomer = slots.shares(threads=room.shared_threads)

    assert room.shared_threads == THREADS - THREADS // 2
    # Two endpoints with work in the shared flow's half: a quarter of the threads each.
    assert rooms == {"slow": THREADS // 4 - 2, "quick": THREADS // 4}
    assert newcomer == (THREADS // 2) // 3


def test_a_limited_endpoint_its_own_limits_held_back_leaves_its_unused_share_to_the_rest() -> None:
    slots = make({SHARED: 4, "billing": 2})

    hungry = slots.room(["billing"], {"billing"}, hungry={"billing"})
    sated = slots.room(["billing"], {"billing"}, hungry=set())

    assert hungry.shared == THREADS - THREADS // 2 - 4
    # It keeps one thread beyond the two it holds, for its next token.
    assert sated.shared == THREADS - 3 - 4
    assert hungry.held == {"billing": THREADS // 2 - 2}
    # It may start one more (its next token), and becomes hungry again if that was all it asked.
    assert sated.held == {"billing": 1}


def test_a_limited_endpoint_alone_takes_every_idle_thread() -> None:
    slots = make({"billing": 3})

    assert slots.room(["billing"], {"billing"}).held == {"billing": THREADS - 3}


def test_a_limited_endpoint_never_gets_a_busy_thread() -> None:
    # The shared flow claimed ahead before billing had work: no thread is idle.
    slots = make({SHARED: 2 * THREADS})

    room = slots.room(["billing"], {"billing"})

    assert (room.shared, room.held) == (0, {"billing": 0})
    for _ in range(THREADS + 3):
        slots.attempt_ended()
    # Threads free once their attempts end, before their outcomes are recorded.
    assert slots.room(["billing"], {"billing"}).held == {"billing": 3}
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


def test_the_recorder_lingers_less_when_a_claim_waits_for_what_it_frees() -> None:
    assert make({SHARED: 2 * THREADS - 1}).record_linger() == tuning.RECORD_LINGER_SECONDS
    assert make({SHARED: 2 * THREADS}).record_linger() == tuning.RECORD_LINGER_WHEN_FULL_SECONDS
    assert make({"billing": 1}).record_linger() == tuning.RECORD_LINGER_WHEN_HELD_SECONDS


def test_an_endpoint_alone_in_the_shared_flow_may_fill_every_slot() -> None:
    # Before anything is held or claimed, a first claim's endpoints take half the threads each.
    assert make().shares() == ({}, THREADS // 2)
    slots = make({SHARED: 5})

    assert slots.shares() == ({"default": 2 * THREADS - 5}, THREADS // 2)


def test_an_endpoint_whose_deliveries_all_came_back_still_counts_while_it_has_due_work() -> None:
    slots = planner.SlotPlanner(THREADS)
    slots.claimed(SHARED, ["slow"] * 3 + ["fast"] * 3)
    slots.saw_due(["slow", "fast"])
    # The fast endpoint's deliveries are all recorded before the next claim.
    slots.released(SHARED, ["fast"] * 3)

    rooms, _ = slots.shares()

    assert rooms == {"slow": THREADS // 2 - 3, "fast": THREADS // 2}
    # Once a claim finds no more of its work, the slow one is alone and may fill every slot.
    slots.saw_due(["slow"])
    assert slots.shares()[0] == {"slow": 2 * THREADS - 3}


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


def test_endpoints_in_the_shared_flow_keep_to_shares_in_proportion_to_their_weights() -> None:
    slots = planner.SlotPlanner(THREADS)
    slots.claimed(SHARED, ["slow"] * THREADS + ["heavy"] * 2)

    rooms, newcomer = slots.shares({"heavy": 3.0})

    # 16 threads, weights 1 and 3: shares of 4 and 12.
    assert rooms == {"slow": 0, "heavy": 12 - 2}
    assert newcomer == THREADS // 5, "a newcomer of weight 1 against a sum of 4"


def test_a_weighted_endpoint_holding_none_gets_its_weighted_share_at_once() -> None:
    slots = make({SHARED: 5})

    rooms, newcomer = slots.shares({"heavy": 3.0, "light": 0.5})

    assert rooms == {
        "default": 2 * THREADS - 5,
        "heavy": THREADS * 3 // 4,
        "light": THREADS // 3,
    }
    assert newcomer == THREADS // 2


def test_an_endpoint_alone_fills_every_slot_whatever_its_weight() -> None:
    slots = make({SHARED: 5})

    assert slots.shares({"default": 0.01}) == ({"default": 2 * THREADS - 5}, THREADS - 1)
    assert slots.room([], (), {"default": 0.01}) == planner.Room(2 * THREADS - 5, {})
    alone = make({"billing": 3})
    assert alone.room(["billing"], {"billing"}, {"billing": 0.01}).held == {"billing": THREADS - 3}


def test_a_light_endpoint_keeps_a_share_of_one_thread() -> None:
    slots = planner.SlotPlanner(THREADS)
    slots.claimed(SHARED, ["light", "heavy"])

    rooms, _ = slots.shares({"light": 0.001, "heavy": 1000.0})

    assert rooms == {"light": 0, "heavy": THREADS - 1 - 1}


def test_a_share_that_comes_out_whole_is_not_rounded_down() -> None:
    slots = planner.SlotPlanner(THREADS)
    slots.claimed(SHARED, ["a", "b"])

    # 16 * 0.3 / (0.1 + 0.3) is 11.999999999999998 in floating point.
    assert slots.shares({"a": 0.1, "b": 0.3}) == ({"a": 4 - 1, "b": 12 - 1}, 11)


def test_limited_endpoints_get_shares_in_proportion_to_their_weights() -> None:
    slots = make()

    room = slots.room(["billing", "mail"], {"billing", "mail"}, {"billing": 3.0})

    # Billing 3, mail 1 and the shared flow 1: 16 * 3 / 5 and 16 / 5.
    assert room.held == {"billing": 9, "mail": 3}
    assert room.shared == THREADS - 9 - 3


def test_the_shared_flow_weighs_as_its_heaviest_endpoint_against_a_limited_one() -> None:
    slots = make({SHARED: 2})

    room = slots.room(["billing"], {"billing"}, {"default": 3.0})

    assert room.held == {"billing": THREADS // 4}
    assert room.shared == THREADS - THREADS // 4 - 2


weights = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "default"]),
    st.floats(min_value=0.001, max_value=1000, allow_nan=False),
)


@settings(deadline=None, database=None)
@given(
    holding=st.dictionaries(st.sampled_from([SHARED, "a", "b", "c", "d"]), st.integers(0, 40)),
    held=st.lists(names, unique=True),
    waiting=st.sets(names),
)
def test_weights_of_one_change_nothing(
    holding: dict[str, int], held: list[str], waiting: set[str]
) -> None:
    slots = make(holding)
    ones = dict.fromkeys(["a", "b", "c", "d", "default"], 1.0)

    assert slots.room(held, waiting, ones) == slots.room(held, waiting)
    assert slots.shares(ones) == slots.shares()


@settings(deadline=None, database=None)
@given(weighed=weights, threads=st.integers(1, 64))
def test_a_heavier_endpoint_never_gets_a_smaller_share(
    weighed: dict[str, float], threads: int
) -> None:
    slots = planner.SlotPlanner(threads)
    # One delivery each, so that each room is its share less one.
    slots.claimed(SHARED, ["a", "b", "c", "d"])

    rooms, _ = slots.shares(weighed)

    share = {name: rooms[name] + 1 for name in "abcd"}
    weight = {name: weighed.get(name, 1.0) for name in "abcd"}
    for one in "abcd":
        for other in "abcd":
            if weight[one] >= weight[other]:
                assert share[one] >= share[other]
    assert all(count >= 1 for count in share.values())
    assert sum(share.values()) <= threads + 4, "rounded down, or up to one thread"


@settings(deadline=None, database=None)
@given(
    holding=st.dictionaries(st.sampled_from([SHARED, "a", "b", "c", "d"]), st.integers(0, 40)),
    held=st.lists(names, unique=True),
    waiting=st.sets(names),
    weighed=weights,
)
def test_weighted_rooms_never_overcommit_threads_or_slots(
    holding: dict[str, int], held: list[str], waiting: set[str], weighed: dict[str, float]
) -> None:
    slots = make(holding)
    total = sum(holding.values())

    room = slots.room(held, waiting, weighed)

    assert all(count >= 0 for count in room.held.values()) and room.shared >= 0
    assert sum(room.held.values()) <= max(0, THREADS - total)
    assert all(room.held[name] == 0 for name in held if name not in waiting)
    assert room.shared <= max(0, 2 * THREADS - holding.get(SHARED, 0))
