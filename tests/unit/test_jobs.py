"""Job ids: 26 Crockford base32 digits of creation milliseconds and random bits."""

from __future__ import annotations

import itertools
import os
import time

import pytest

from scheduler import jobs

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def decode(job_id: str) -> int:
    value = 0
    for char in job_id:
        value = value * 32 + ALPHABET.index(char)
    return value


def test_an_id_holds_its_creation_time_in_milliseconds() -> None:
    before = int(time.time() * 1000)
    job_id = jobs.new_job_id()
    after = int(time.time() * 1000)
    assert len(job_id) == 26
    assert set(job_id) <= set(ALPHABET)
    assert before <= decode(job_id) >> 80 <= after


def test_ids_strictly_increase_as_numbers_and_as_text() -> None:
    ids = [jobs.new_job_id() for _ in range(2000)]
    values = [decode(job_id) for job_id in ids]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert ids == sorted(ids)
    # Many share a millisecond; the random part then counts up by one.
    assert any(b - a == 1 for a, b in itertools.pairwise(values))


def test_counting_up_carries_past_the_last_digit() -> None:
    for job_id in ("0" * 25 + "z", "0" * 10 + "z" * 16, "1" * 9 + "z" * 17):
        assert decode(jobs._successor(job_id)) == decode(job_id) + 1


def id_made_in_a_forked_child() -> str:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, jobs.new_job_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    return child


def test_a_forked_child_draws_random_digits_of_its_own() -> None:
    # Ids draw their random digits in batches; a child must not reuse the parent's batch.
    jobs.new_job_id()
    child = id_made_in_a_forked_child()
    parent = jobs.new_job_id()
    assert len(child) == 26
    assert child[10:] != parent[10:]


def test_a_forked_child_does_not_count_up_from_the_parents_last_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # When a new draw sorts below the last id, the next id is that id's successor: a child that
    # kept the parent's last id would make the very id the parent makes next.
    monkeypatch.setattr(jobs, "_last_id", "y" * 26)
    child = id_made_in_a_forked_child()

    assert jobs.new_job_id() == jobs._successor("y" * 26)
    assert len(child) == 26 and child != jobs._successor("y" * 26)
