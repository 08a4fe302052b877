"""The soak's faults: a plan drawn from the seed, and the injector that applies each one, holds
it, heals it and writes it down.

The seed fixes the plan (each fault's kind, time, length and draws); what a fault meets when it
comes (which dispatcher leads, what is in flight) depends on timing. Kinds are dealt from a
shuffled deck, so every kind comes once before any comes again, and even a short run meets each.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import pathlib
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg

from scheduler import client
from tests import support
from tests.chaos import checker, receivers
from tests.chaos.cluster import LIMITED, Cluster, Slot

T = TypeVar("T")

# Each kind, with how long it lasts before it is healed (seconds, uniform between the two).
HOLDS = {
    "kill_dispatcher": (0.5, 3.0),
    "term_dispatcher": (0.5, 3.0),
    # About half of the cuts outlast the leader timeout (6 s), so their claims are rescued.
    "cut_dispatcher": (1.0, 12.0),
    "skew_dispatcher": (5.0, 20.0),
    "kill_web": (0.5, 3.0),
    "kill_web_worker": (0.0, 0.0),
    "term_web": (0.5, 3.0),
    "restart_postgres": (1.0, 4.0),
    "endpoint_errors": (2.0, 8.0),
    "endpoint_slow": (2.0, 8.0),
    "endpoint_retry_after": (2.0, 8.0),
    "pause_endpoint": (1.0, 5.0),
    "change_limits": (0.0, 0.0),
    "cancel_jobs": (0.0, 0.0),
    "edit_cron": (0.0, 0.0),
    "pause_cron": (2.0, 8.0),
}
KINDS = tuple(HOLDS)
# Put first on a skewed dispatcher's PYTHONPATH (see skewed_env).
FAKETIME_SITE = pathlib.Path(__file__).parent / "faketime"
# Faults come this far apart on average (less in a short run, so that it meets every kind).
MEAN_GAP_SECONDS = 4.0
# A skewed dispatcher's clock is this many seconds ahead or behind.
SKEW_SECONDS = (2.0, 6.0)
# The limited endpoint's limits: as set before the faults and again once they are healed, and
# those a change picks from.
INITIAL_LIMITS = (8.0, 4)
RATES = (2.0, 4.0, 8.0)
MOST_IN_FLIGHT = (1, 2, 4)
# The crons (id: spec, endpoint) and the specs an edit picks from.
CRONS = {
    "tick": ("* * * * * *", "default"),
    "pulse": ("*/2 * * * * *", LIMITED),
    "beat": ("*/3 * * * * *", "default"),
}
CRON_SPECS = ("* * * * * *", "*/2 * * * * *", "*/3 * * * * *", "1-59/2 * * * * *")
# A fault whose target is busy (another fault holds it) is tried again this often.
RETRY_SECONDS = 0.5
# A management call (limits, pauses) is tried again for this long while the web process or
# PostgreSQL is away.
MANAGE_SECONDS = 30.0
# Fault threads get this long to heal and end once the chaos is over.
HEAL_SECONDS = 90.0


@dataclasses.dataclass(frozen=True)
class Card:
    """One planned fault: its kind, when (seconds into the chaos), how long it holds, and the
    seed of its own draws (target, values)."""

    kind: str
    at: float
    hold: float
    draw: int


def plan(seed: int, duration: float, kinds: tuple[str, ...] = KINDS) -> list[Card]:
    """The faults of a run of `duration` seconds."""
    rng = random.Random(seed)
    gap = min(MEAN_GAP_SECONDS, duration / (len(kinds) + 1))
    cards: list[Card] = []
    deck: list[str] = []
    moment = rng.uniform(0.5, 1.5) * gap
    while moment < duration:
        if not deck:
            deck = list(kinds)
            rng.shuffle(deck)
        kind = deck.pop()
        cards.append(Card(kind, moment, rng.uniform(*HOLDS[kind]), rng.getrandbits(32)))
        moment += rng.uniform(0.5, 1.5) * gap
    return cards


def skewed_env(offset: float) -> dict[str, str]:
    """The environment of a dispatcher whose host clock is `offset` seconds off (its monotonic
    clock, which times its waits, is left alone), with the sleep that libfaketime breaks
    replaced (faketime/sitecustomize.py)."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        "FAKETIME": f"{offset:+.1f}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "LD_PRELOAD": support.faketime_library(),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(FAKETIME_SITE), path])),
    }


def available_kinds() -> tuple[str, ...]:
    """Every kind this machine can inject: a skewed clock needs Debian's faketime."""
    if support.faketime_library():
        return KINDS
    return tuple(kind for kind in KINDS if kind != "skew_dispatcher")


@dataclasses.dataclass(frozen=True)
class CronEvent:
    """A change made to a cron (`set`, `edit`, `pause`, `resume`), asked for at `asked` and
    answered at `answered`; `done` is False when no call succeeded (its outcome is unknown)."""

    cron_id: str
    kind: str
    spec: str | None
    asked: float
    answered: float
    done: bool


def cron_spans(events: list[CronEvent], window_end: float) -> list[checker.CronSpan]:
    """When each cron ran which spec unpaused, from the ledger: from a change's answer to the
    next change's asking (less LATENCY_SLACK, for a tick the timer fires just after), and the
    last up to the window's end. Nothing is owed while a change's outcome is unknown."""
    spans: list[checker.CronSpan] = []
    for cron_id in sorted({event.cron_id for event in events}):
        spec: str | None = None
        paused: bool | None = None
        start: float | None = None
        for event in sorted((e for e in events if e.cron_id == cron_id), key=lambda e: e.asked):
            if start is not None and spec is not None:
                end = event.asked - checker.LATENCY_SLACK
                spans.append(checker.CronSpan(cron_id, spec, start, end))
            start = None
            if not event.done:
                spec, paused = (None, paused) if event.spec else (spec, None)
                continue
            if event.spec is not None:
                spec = event.spec
            if event.kind in ("set", "pause", "resume"):
                paused = event.kind == "pause"
            if spec is not None and paused is False:
                start = event.answered
        if start is not None and spec is not None:
            spans.append(checker.CronSpan(cron_id, spec, start, window_end))
    return spans


class Injector:
    """Applies the plan's faults, each on a thread of its own that holds it and heals it, and
    keeps the ledger the checker reads: faults (with the deliveries killed or cut dispatchers
    held) and every change of the limited endpoint's limits."""

    def __init__(self, cluster: Cluster, recent_jobs: Callable[[], list[str]]) -> None:
        self.cluster = cluster
        self.recent_jobs = recent_jobs
        self.faults: list[checker.Fault] = []
        self.limits: list[checker.Limits] = []
        self.cron_events: list[CronEvent] = []
        self.skipped: collections.Counter[str] = collections.Counter()
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.healing = threading.Event()
        self._lock = threading.Lock()
        self._endpoint_lock = threading.Lock()
        self._busy: set[str] = set()
        self._threads: list[threading.Thread] = []

    # --- set-up and the end ----------------------------------------------------------------

    def set_up(self) -> None:
        """The limited endpoint's first limits and the crons, before any fault."""
        rate, most = INITIAL_LIMITS
        self.change_endpoint(
            lambda api: api.set_endpoint_limits(LIMITED, rate_limit=rate, max_in_flight=most)
        )

        def set_crons(api: client.Client) -> bool:
            api.set_crons(
                {cron_id: {"spec": spec, "endpoint": to} for cron_id, (spec, to) in CRONS.items()}
            )
            return True

        asked = time.time()
        done = self._call(set_crons) is not None
        for cron_id, (spec, _) in CRONS.items():
            self._note_cron(CronEvent(cron_id, "set", spec, asked, time.time(), done))
        if not done:
            self.errors.append("the crons could not be set up")

    def run(self, cards: list[Card], duration: float) -> None:
        """Apply each card at its time, until `duration` seconds have passed."""
        started = time.monotonic()
        for index, card in enumerate(cards):
            if self.healing.wait(max(0.0, started + card.at - time.monotonic())):
                return
            thread = threading.Thread(
                target=self._apply, args=(card,), name=f"fault-{index}-{card.kind}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        self.healing.wait(max(0.0, started + duration - time.monotonic()))

    def heal(self) -> None:
        """End every fault: each thread heals its own at once; then the rest is put back as it
        was before the faults."""
        self.healing.set()
        deadline = time.monotonic() + HEAL_SECONDS
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                self.errors.append(f"{thread.name} did not heal within {HEAL_SECONDS:g}s")
        cluster = self.cluster
        if not cluster.wait_for_database(0.5):
            cluster.postgres.start()
        for proxy in cluster.proxies.values():
            proxy.restore()
        for receiver in cluster.receivers.values():
            receiver.set_mode(receivers.NORMAL)
        for slot in cluster.slots:
            with slot.lock:
                if slot.extra_env or not slot.running():
                    cluster.stop(slot)
                    if not cluster.start(slot):
                        self.errors.append(f"{slot.name} did not start again after the faults")
        rate, most = INITIAL_LIMITS
        self.change_endpoint(lambda api: api.resume_endpoint(LIMITED))
        self.change_endpoint(
            lambda api: api.set_endpoint_limits(LIMITED, rate_limit=rate, max_in_flight=most)
        )
        with cluster.database() as conn:
            paused = [row[0] for row in conn.execute("SELECT id FROM crons WHERE paused")]
        # Only those paused: resuming a running cron starts its schedule afresh too.
        for cron_id in paused:
            self._cron_call(
                cron_id, "resume", None, lambda api, cron_id=cron_id: api.resume_cron(cron_id)
            )

    # --- applying one fault ----------------------------------------------------------------

    def _apply(self, card: Card) -> None:
        """Apply the card, waiting for a free target while the chaos lasts."""
        rng = random.Random(card.draw)
        while True:
            started = time.time()
            try:
                outcome = getattr(self, "_" + card.kind)(card, rng)
            except Exception:
                self.errors.append(f"{card.kind}: {traceback.format_exc()}")
                return
            if outcome is not None:
                break
            if self.healing.wait(RETRY_SECONDS):
                with self._lock:
                    self.skipped[card.kind] += 1
                return
        target, held = outcome
        with self._lock:
            self.faults.append(checker.Fault(card.kind, target, started, time.time(), held))

    def _hold(self, card: Card) -> None:
        self.healing.wait(card.hold)

    @contextlib.contextmanager
    def _taking(self, name: str) -> Iterator[bool]:
        """Whether `name` (a receiver, a cron, postgres...) was free; it is this fault's until
        the block ends."""
        with self._lock:
            free = name not in self._busy
            self._busy.add(name)
        try:
            yield free
        finally:
            if free:
                with self._lock:
                    self._busy.discard(name)

    def _take_dispatcher(self, rng: random.Random) -> Slot | None:
        """A running dispatcher no other fault works on, leaving at least one unimpaired."""
        slots = self.cluster.dispatcher_slots
        with self._lock:
            impaired = sum(1 for slot in slots if slot.lock.locked() or not slot.running())
            if impaired >= len(slots) - 1:
                return None
            free = [slot for slot in slots if slot.running() and not slot.lock.locked()]
            rng.shuffle(free)
            for slot in free:
                if slot.lock.acquire(blocking=False):
                    return slot
        return None

    def _take_web(self) -> Slot | None:
        web = self.cluster.web
        return web if web.running() and web.lock.acquire(blocking=False) else None

    def _restart(self, slot: Slot, **env: str) -> None:
        if not self.cluster.start(slot, **env):
            self.notes.append(
                f"{slot.name} was not serving in time after a fault; the manager starts it again"
            )

    def _kill_dispatcher(
        self, card: Card, rng: random.Random
    ) -> tuple[str, tuple[str, ...]] | None:
        slot = self._take_dispatcher(rng)
        if slot is None:
            return None
        try:
            self.cluster.kill(slot)
            held = self.cluster.held(slot) or ()
            self._hold(card)
            self._restart(slot)
        finally:
            slot.lock.release()
        return slot.name, held

    def _term_dispatcher(
        self, card: Card, rng: random.Random
    ) -> tuple[str, tuple[str, ...]] | None:
        slot = self._take_dispatcher(rng)
        if slot is None:
            return None
        try:
            code = self.cluster.stop(slot)
            held = self.cluster.held(slot) or ()
            self._hold(card)
            self._restart(slot)
        finally:
            slot.lock.release()
        return f"{slot.name} (exit {code})", held

    def _cut_dispatcher(self, card: Card, rng: random.Random) -> tuple[str, tuple[str, ...]] | None:
        slot = self._take_dispatcher(rng)
        if slot is None:
            return None
        proxy = self.cluster.proxies[slot.name]
        try:
            proxy.cut()
            held = self.cluster.held(slot) or ()
            self._hold(card)
            proxy.restore()
        finally:
            slot.lock.release()
        return f"{slot.name} ({card.hold:.1f}s)", held

    def _skew_dispatcher(
        self, card: Card, rng: random.Random
    ) -> tuple[str, tuple[str, ...]] | None:
        slot = self._take_dispatcher(rng)
        if slot is None:
            return None
        offset = rng.choice((-1, 1)) * rng.uniform(*SKEW_SECONDS)
        try:
            self.cluster.stop(slot)
            held = self.cluster.held(slot) or ()
            self._restart(slot, **skewed_env(offset))
            self._hold(card)
            self.cluster.stop(slot)
            held += self.cluster.held(slot) or ()
            self._restart(slot)
        finally:
            slot.lock.release()
        return f"{slot.name} ({offset:+.1f}s)", held

    def _kill_web(self, card: Card, rng: random.Random) -> tuple[str, tuple[str, ...]] | None:
        web = self._take_web()
        if web is None:
            return None
        try:
            self.cluster.kill(web)
            self._hold(card)
            self._restart(web)
        finally:
            web.lock.release()
        return "web", ()

    def _kill_web_worker(
        self, card: Card, rng: random.Random
    ) -> tuple[str, tuple[str, ...]] | None:
        web = self._take_web()
        if web is None:
            return None
        try:
            pid = self.cluster.kill_web_worker()
        finally:
            web.lock.release()
        return (f"web worker {pid}", ()) if pid else None

    def _term_web(self, card: Card, rng: random.Random) -> tuple[str, tuple[str, ...]] | None:
        web = self._take_web()
        if web is None:
            return None
        try:
            code = self.cluster.stop(web)
            self._hold(card)
            self._restart(web)
        finally:
            web.lock.release()
        return f"web (exit {code})", ()

    def _restart_postgres(
        self, card: Card, rng: random.Random
    ) -> tuple[str, tuple[str, ...]] | None:
        with self._taking("postgres") as free:
            if not free:
                return None
            # Every dispatcher is cut: what they all hold may be sent again.
            held = self.cluster.held(None) or ()
            failed = self.cluster.stop_postgres()
            if failed:
                self.notes.append(f"pg_ctl could not stop PostgreSQL: {failed}")
                if self.cluster.wait_for_database(1):
                    return None
            self._hold(card)
            self.cluster.postgres.start()
            if not self.cluster.wait_for_database(10):
                self.errors.append("PostgreSQL did not answer within 10 s of its restart")
            held += self.cluster.held(None) or ()
        return f"postgres ({card.hold:.1f}s down)", tuple(sorted(set(held)))

    def _endpoint_mode(
        self, card: Card, rng: random.Random, mode: str
    ) -> tuple[str, tuple[str, ...]] | None:
        name = rng.choice(sorted(self.cluster.receivers))
        with self._taking("receiver:" + name) as free:
            if not free:
                return None
            receiver = self.cluster.receivers[name]
            receiver.set_mode(mode)
            self._hold(card)
            receiver.set_mode(receivers.NORMAL)
        return f"{name} ({card.hold:.1f}s)", ()

    def _endpoint_errors(
        self, card: Card, rng: random.Random
    ) -> tuple[str, tuple[str, ...]] | None:
        return self._endpoint_mode(card, rng, receivers.ERRORS)

    def _endpoint_slow(self, card: Card, rng: random.Random) -> tuple[str, tuple[str, ...]] | None:
        return self._endpoint_mode(card, rng, receivers.SLOW)

    def _endpoint_retry_after(
        self, card: Card, rng: random.Random
    ) -> tuple[str, tuple[str, ...]] | None:
        return self._endpoint_mode(card, rng, receivers.RETRY_AFTER)

    def _pause_endpoint(self, card: Card, rng: random.Random) -> tuple[str, tuple[str, ...]] | None:
        with self._taking("pause:" + LIMITED) as free:
            if not free:
                return None
            self.change_endpoint(lambda api: api.pause_endpoint(LIMITED))
            self._hold(card)
            self.change_endpoint(lambda api: api.resume_endpoint(LIMITED))
        return f"{LIMITED} ({card.hold:.1f}s)", ()

    def _change_limits(self, card: Card, rng: random.Random) -> tuple[str, tuple[str, ...]] | None:
        rate, most = rng.choice(RATES), rng.choice(MOST_IN_FLIGHT)
        self.change_endpoint(
            lambda api: api.set_endpoint_limits(LIMITED, rate_limit=rate, max_in_flight=most)
        )
        return f"{LIMITED} (rate {rate:g}, max_in_flight {most})", ()

    def _cancel_jobs(self, card: Card, rng: random.Random) -> tuple[str, tuple[str, ...]] | None:
        chosen = self._unfinished_jobs(rng, rng.randint(2, 6))
        cancelled = 0
        for job_id in chosen:
            with contextlib.suppress(client.SchedulerError):
                self._api_once(lambda api, job_id=job_id: api.delete(job_id))
                cancelled += 1
        return (f"{cancelled} jobs", ()) if cancelled else None

    def _unfinished_jobs(self, rng: random.Random, count: int) -> list[str]:
        """Up to `count` jobs waiting or being delivered (a cancel of a finished job checks
        nothing); the latest inserted when PostgreSQL cannot say."""
        try:
            with self.cluster.database() as conn:
                rows = conn.execute(
                    "SELECT id, state FROM jobs WHERE state IN ('scheduled', 'delivering')"
                    " AND cron_id IS NULL ORDER BY id DESC LIMIT 200"
                ).fetchall()
        except psycopg.Error:
            rows = [(job_id, "") for job_id in self.recent_jobs()[-30:]]
        # Half of them being delivered when there are such: a cancel during an attempt is the
        # subtle case.
        delivering = [job_id for job_id, state in rows if state == "delivering"]
        waiting = [job_id for job_id, state in rows if state != "delivering"]
        rng.shuffle(delivering)
        rng.shuffle(waiting)
        chosen = delivering[: (count + 1) // 2]
        return chosen + waiting[: count - len(chosen)]

    def _edit_cron(self, card: Card, rng: random.Random) -> tuple[str, tuple[str, ...]] | None:
        cron_id = rng.choice(sorted(CRONS))
        with self._taking("cron:" + cron_id) as free:
            if not free:
                return None
            spec = rng.choice([s for s in CRON_SPECS if s != CRONS[cron_id][0]])
            endpoint = CRONS[cron_id][1]
            done = self._cron_call(
                cron_id, "edit", spec, lambda api: api.put_cron(cron_id, spec, endpoint=endpoint)
            )
        return (f"{cron_id} to {spec!r}", ()) if done else None

    def _pause_cron(self, card: Card, rng: random.Random) -> tuple[str, tuple[str, ...]] | None:
        cron_id = rng.choice(sorted(CRONS))
        with self._taking("cron:" + cron_id) as free:
            if not free:
                return None
            self._cron_call(cron_id, "pause", None, lambda api: api.pause_cron(cron_id))
            self._hold(card)
            self._cron_call(cron_id, "resume", None, lambda api: api.resume_cron(cron_id))
        return f"{cron_id} ({card.hold:.1f}s)", ()

    # --- the API ---------------------------------------------------------------------------

    def _api_once(self, action: Callable[[client.Client], T]) -> T:
        with client.Client(self.cluster.system.url, support.SECRET, timeout=5) as api:
            return action(api)

    def _call(self, action: Callable[[client.Client], T]) -> T | None:
        """`action`'s answer (never None), tried again while the web process or PostgreSQL is
        away; None if it never succeeded (noted)."""
        deadline = time.monotonic() + MANAGE_SECONDS
        while True:
            try:
                return self._api_once(action)
            except client.SchedulerError as exc:
                if time.monotonic() > deadline:
                    self.notes.append(f"gave up on a call after {MANAGE_SECONDS:g}s: {exc}")
                    return None
            threading.Event().wait(0.2)

    def _cron_call(
        self, cron_id: str, kind: str, spec: str | None, action: Callable[[client.Client], T]
    ) -> T | None:
        asked = time.time()
        answer = self._call(action)
        self._note_cron(CronEvent(cron_id, kind, spec, asked, time.time(), answer is not None))
        return answer

    def _note_cron(self, event: CronEvent) -> None:
        with self._lock:
            self.cron_events.append(event)

    def change_endpoint(self, action: Callable[[client.Client], client.Endpoint]) -> None:
        """Change the limited endpoint and write down its limits, as answered (or as the
        database has them, if no answer came), with when the change was asked and answered."""
        with self._endpoint_lock:
            asked = time.time()
            answer = self._call(action)
            state = (
                (answer.rate_limit, answer.max_in_flight, answer.paused)
                if answer is not None
                else self._endpoint_from_database()
            )
            self.limits.append(checker.Limits(LIMITED, asked, time.time(), *state))

    def _endpoint_from_database(self) -> tuple[float | None, int | None, bool]:
        self.cluster.wait_for_database(MANAGE_SECONDS)
        with self.cluster.database() as conn:
            row = conn.execute(
                "SELECT rate_limit, max_in_flight, paused FROM endpoints WHERE name = %s",
                (LIMITED,),
            ).fetchone()
        assert row is not None
        return row[0], row[1], row[2]
