"""The profile summary docs/profiles.md is built from: threads of a pool summed as one, and a
function counted once per stack."""

from __future__ import annotations

from tests.profiles import stacks

RAW = [
    "thread (11): deliver_0;Thread.run (threading.py:982);deliver (scheduler/worker/attempt.py:140)"
    ";post (requests/sessions.py:637) 6",
    "thread (12): deliver_1;Thread.run (threading.py:982);deliver (scheduler/worker/attempt.py:141) 2",
    "thread (13): record;Thread.run (threading.py:982);f (a.py:1);g (b.py:2);f (a.py:3) 2",
]


def test_threads_of_a_pool_are_summed_and_a_recursive_function_counts_once_per_stack() -> None:
    total, threads, functions = stacks.summarise(RAW)
    assert total == 10
    assert threads == {"deliver": 8, "record": 2}
    assert functions["deliver (attempt.py)"] == 8
    assert functions["post (sessions.py)"] == 6
    assert functions["f (a.py)"] == 2
    assert functions["Thread.run (threading.py)"] == 10
