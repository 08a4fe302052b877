"""The soak's invariants, checked over what the receivers logged and what the database holds.

Pure: `check` reads a `Run` (each attempt as a receiver saw it, a snapshot of the jobs, their
recorded attempts and the crons, and the harness's ledger of limit changes, faults and how the
system ended) and returns a `Finding` per invariant, so every rule is tested on hand-made data.
The receivers and PostgreSQL read the same host clock, so an arrival and a due time compare
directly: a dispatcher on a skewed clock has no say in either.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import datetime as dt
import heapq
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from scheduler import cron

# Timestamps round differently (PostgreSQL keeps microseconds, the receivers float seconds).
EPSILON = 0.001
# The most a request takes from its sending thread to the receiver's clock, and a limit change
# from its commit to its answer, on a loaded two-core machine: a tolerance for rules that compare
# an arrival with something the scheduler decided just before it sent.
LATENCY_SLACK = 0.25
# A rate standing for "unlimited" in the sums of the rate check: no endpoint starts this many a
# second, and it keeps the sums finite.
UNLIMITED_RATE = 1e6
# States a cron tick may end in without being sent: an overlap skip, and a tick missed beyond its
# cron's catch-up window.
UNSENT_TICK_STATES = ("skipped", "missed")
# Invariants today's code is known to break under the soak's faults, with why; reported like the
# others, but they do not fail a run. Remove an entry once its cause is fixed.
PENDING: dict[str, str] = {}
# How long a leader with a valid lease may take to record a tick, beyond the leader timeout in
# which the lease may be another's that cannot record it.
TICK_RECORD_SECONDS = 2.0
# How many violations a finding keeps in full; the count is always exact.
EXAMPLES = 20


@dataclasses.dataclass(frozen=True)
class Arrival:
    """One attempt as a receiver saw it: its first byte, its end (its answer going out, or the
    sender gone) and the status answered (None: the sender left before an answer)."""

    endpoint: str
    job_id: str
    attempt: int
    arrived: float
    ended: float
    status: int | None
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclasses.dataclass(frozen=True)
class Job:
    """A row of `jobs`, times as epoch seconds, with the statuses its recorded attempts got
    (delivery_attempts, by attempt number)."""

    id: str
    endpoint: str
    state: str
    attempts: int
    max_attempts: int
    run_at: float
    cron_id: str | None = None
    cancel_requested_at: float | None = None
    created_at: float = 0.0
    recorded: dict[int, int | None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Cron:
    id: str
    spec: str
    paused: bool
    updated_at: float


@dataclasses.dataclass(frozen=True)
class CronSpan:
    """The harness ran cron `cron_id` on `spec`, unpaused, from `start` to `end`: every tick in
    between is owed a record."""

    cron_id: str
    spec: str
    start: float
    end: float


@dataclasses.dataclass(frozen=True)
class Limits:
    """An endpoint's limits and pause as set by one change, asked for at `asked` and answered at
    `answered`: it committed in between."""

    endpoint: str
    asked: float
    answered: float
    rate: float | None
    max_in_flight: int | None
    paused: bool = False


@dataclasses.dataclass(frozen=True)
class Fault:
    """One fault injected; `held`: the deliveries the dispatchers it killed or cut held then."""

    kind: str
    target: str
    started: float
    ended: float
    held: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Timing:
    """The soak's settings the rules depend on, in seconds."""

    claim_ahead: float
    attempt_deadline: float
    leader_timeout: float
    retry_cap: float


@dataclasses.dataclass(frozen=True)
class Ending:
    """The system after every fault was healed: each live dispatcher's threads not running
    (GET /dispatchers), how many dispatchers run, /readyz, and exits the harness did not cause,
    then each process's exit status when stopped with SIGTERM."""

    dispatchers: dict[str, dict[str, str]]
    expected_dispatchers: int
    ready: bool
    unexpected_exits: tuple[str, ...] = ()
    stop_codes: dict[str, int | None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Run:
    """Everything the checker reads. `window_end` (database time): jobs due later and ticks
    later are outside the soak."""

    timing: Timing
    window_end: float
    arrivals: tuple[Arrival, ...]
    jobs: tuple[Job, ...]
    crons: tuple[Cron, ...]
    limits: tuple[Limits, ...]
    faults: tuple[Fault, ...]
    ending: Ending
    cron_spans: tuple[CronSpan, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        jobs = []
        for job in data["jobs"]:
            fields = {k: v for k, v in job.items() if k != "recorded"}
            recorded = {int(k): v for k, v in job["recorded"].items()}
            jobs.append(Job(**fields, recorded=recorded))
        ending = dict(data["ending"])
        ending["unexpected_exits"] = tuple(ending.get("unexpected_exits", ()))
        return cls(
            timing=Timing(**data["timing"]),
            window_end=data["window_end"],
            arrivals=tuple(Arrival(**a) for a in data["arrivals"]),
            jobs=tuple(jobs),
            crons=tuple(Cron(**c) for c in data["crons"]),
            limits=tuple(Limits(**limit) for limit in data["limits"]),
            faults=tuple(Fault(**{**f, "held": tuple(f["held"])}) for f in data["faults"]),
            ending=Ending(**ending),
            cron_spans=tuple(CronSpan(**span) for span in data.get("cron_spans", ())),
        )


@dataclasses.dataclass(frozen=True)
class Finding:
    """One invariant's verdict: how many items it checked, every violation (the first EXAMPLES
    of them in words) and whether it is PENDING."""

    name: str
    rule: str
    checked: int
    violations: int
    examples: tuple[str, ...]

    @property
    def pending(self) -> str | None:
        return PENDING.get(self.name)

    @property
    def fails_run(self) -> bool:
        return self.violations > 0 and self.pending is None


class _Tally:
    def __init__(self) -> None:
        self.checked = 0
        self.violations = 0
        self.examples: list[str] = []

    def violation(self, text: str) -> None:
        self.violations += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)

    def finding(self, name: str) -> Finding:
        return Finding(name, RULES[name], self.checked, self.violations, tuple(self.examples))


def check(run: Run) -> list[Finding]:
    """Every invariant, in the order of RULES."""
    return [CHECKS[name](run).finding(name) for name in RULES]


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


def _by_job(arrivals: Iterable[Arrival]) -> dict[str, list[Arrival]]:
    grouped: dict[str, list[Arrival]] = collections.defaultdict(list)
    for arrival in sorted(arrivals, key=lambda a: a.arrived):
        grouped[arrival.job_id].append(arrival)
    return grouped


def _held(run: Run) -> set[str]:
    return {job_id for fault in run.faults for job_id in fault.held}


def check_outcomes(run: Run) -> _Tally:
    """Every job due in the window ends delivered (and a receiver answered it 2xx), failed after
    its last attempt, cancelled (after a cancel), or, for a tick, recorded unsent on purpose."""
    tally = _Tally()
    answered = {a.job_id for a in run.arrivals if a.delivered}
    for job in run.jobs:
        if job.run_at > run.window_end:
            continue
        tally.checked += 1
        if job.state == "delivered":
            if job.id not in answered:
                tally.violation(f"job {job.id} is delivered, but no receiver answered it 2xx")
        elif job.state == "failed":
            if job.attempts < job.max_attempts:
                tally.violation(
                    f"job {job.id} failed after {job.attempts} of {job.max_attempts} attempts"
                )
        elif job.state == "cancelled":
            if job.cancel_requested_at is None:
                tally.violation(f"job {job.id} is cancelled, but no cancel was asked for")
        elif not (job.cron_id and job.state in UNSENT_TICK_STATES):
            tally.violation(
                f"job {job.id} ({job.endpoint}, due {_when(job.run_at)}) ended {job.state}"
                f" after {job.attempts} of {job.max_attempts} attempts"
            )
    return tally


def check_not_early(run: Run) -> _Tally:
    """No attempt arrives before its job was due, and none before the Retry-After its previous
    attempt was answered with (when that answer was recorded and no fault held the job)."""
    tally = _Tally()
    jobs = {job.id: job for job in run.jobs}
    held = _held(run)
    for job_id, arrivals in _by_job(run.arrivals).items():
        job = jobs.get(job_id)
        if job is None:
            continue
        for arrival in arrivals:
            tally.checked += 1
            if arrival.arrived < job.run_at - EPSILON:
                tally.violation(
                    f"job {job_id} attempt {arrival.attempt} arrived at {_when(arrival.arrived)},"
                    f" {job.run_at - arrival.arrived:.3f}s before it was due"
                )
        if job_id not in held:
            _check_retry_after(job, arrivals, run.timing.retry_cap, tally)
    return tally


def _check_retry_after(job: Job, arrivals: list[Arrival], cap: float, tally: _Tally) -> None:
    numbers = collections.Counter(a.attempt for a in arrivals)
    for asked in arrivals:
        if asked.retry_after is None or numbers[asked.attempt] != 1:
            continue
        if job.recorded.get(asked.attempt) != asked.status:
            continue
        wait = min(asked.retry_after, cap)
        following = [a for a in arrivals if a.attempt == asked.attempt + 1]
        if following and following[0].arrived < asked.ended + wait - EPSILON:
            gap = following[0].arrived - asked.ended
            tally.violation(
                f"job {job.id} attempt {asked.attempt + 1} came {gap:.3f}s after a Retry-After"
                f" of {asked.retry_after:g}s (capped at {cap:g}s)"
            )


def check_cancels(run: Run) -> _Tally:
    """No attempt of a job starts after its cancel committed, beyond the claim-ahead window (a
    delivery claimed that long before it starts is sent whatever happens meanwhile)."""
    tally = _Tally()
    allowed = run.timing.claim_ahead + LATENCY_SLACK
    arrivals = _by_job(run.arrivals)
    for job in run.jobs:
        asked = job.cancel_requested_at
        if asked is None:
            continue
        tally.checked += 1
        for arrival in arrivals.get(job.id, ()):
            if arrival.arrived > asked + allowed:
                tally.violation(
                    f"job {job.id} attempt {arrival.attempt} arrived"
                    f" {arrival.arrived - asked:.3f}s after its cancel (at {_when(asked)})"
                )
    return tally


class _Envelope:
    """What an endpoint's limits allowed around each moment, from its changes: a change counts
    from when it was asked for, the value before it until the change was answered, and each
    LATENCY_SLACK longer, so that a start decided just before a commit is judged by the limits
    it was decided under. Before the first change the endpoint is not limited."""

    def __init__(self, changes: Sequence[Limits]) -> None:
        self.changes = sorted(changes, key=lambda c: c.asked)
        # Each change's value holds from its asking until the next change was answered.
        self.spans = [
            (change.asked, nxt.answered if nxt else float("inf"), change)
            for change, nxt in zip(self.changes, [*self.changes[1:], None], strict=True)
        ]
        self.breaks = sorted(
            {start for start, _, _ in self.spans}
            | {end + LATENCY_SLACK for _, end, _ in self.spans if end != float("inf")}
        )
        # A raised rate refills the bucket at the new rate since its last refill, made under the
        # old one (up to the new capacity): up to the difference in capacity more at once.
        self.raises = [
            (change.asked, _capacity(change.rate) - (_capacity(old.rate) if old.rate >= 1 else 0))
            for old, change in itertools.pairwise(self.changes)
            if old.rate is not None and change.rate is not None and change.rate > old.rate
        ]
        # The rate allowed on each piece between breaks, and the starts allowed up to each break.
        self._totals = [0.0]
        for start, end in zip(self.breaks, self.breaks[1:], strict=False):
            self._totals.append(self._totals[-1] + self.rate_at((start + end) / 2) * (end - start))

    def values_around(self, moment: float) -> list[Limits]:
        """The values in force at some time in [moment - LATENCY_SLACK, moment]."""
        return [
            c for start, end, c in self.spans if start <= moment and end > moment - LATENCY_SLACK
        ]

    def rate_at(self, moment: float) -> float:
        """The bucket's refill rate: a paused endpoint's bucket fills as usual (up to what it
        holds), so a pause counts here at its rate."""
        rates = [c.rate for c in self.values_around(moment)]
        return max((UNLIMITED_RATE if r is None else r for r in rates), default=UNLIMITED_RATE)

    def allowed_until(self, moment: float) -> float:
        """Starts the rates allowed from the first change to `moment` (before it, without
        limit: negative, and steep)."""
        first = self.breaks[0]
        if moment < first:
            return UNLIMITED_RATE * (moment - first)
        index = bisect.bisect_right(self.breaks, moment) - 1
        raised = sum(bonus for asked, bonus in self.raises if asked <= moment)
        return self._totals[index] + self.rate_at(moment) * (moment - self.breaks[index]) + raised

    def burst_at(self, moment: float) -> float:
        """The most the bucket can hold at a start that arrived at `moment`: one second's worth
        (at least one) of the rates in force then."""
        rates = [c.rate for c in self.values_around(moment) if c.rate is not None]
        return max((_capacity(rate) for rate in rates), default=1.0)


def _capacity(rate: float) -> float:
    """A token bucket's size: one second's worth, at least one token (policy.TokenBucket)."""
    return max(rate, 1.0)


def check_limits(run: Run) -> _Tally:
    """At every arrival, the endpoint's attempts in progress (this one included) are within its
    max_in_flight and it is not paused; over every window of arrivals, no more than its rate
    allows: one second's worth (at least one) plus the rate times the window."""
    tally = _Tally()
    for endpoint in sorted({c.endpoint for c in run.limits}):
        envelope = _Envelope([c for c in run.limits if c.endpoint == endpoint])
        arrivals = sorted(
            (a for a in run.arrivals if a.endpoint == endpoint), key=lambda a: a.arrived
        )
        tally.checked += len(arrivals)
        _check_in_flight(endpoint, arrivals, envelope, tally)
        _check_rate(endpoint, arrivals, envelope, tally)
    return tally


def _check_in_flight(
    endpoint: str, arrivals: list[Arrival], envelope: _Envelope, tally: _Tally
) -> None:
    ends: list[float] = []
    for arrival in arrivals:
        while ends and ends[0] <= arrival.arrived:
            heapq.heappop(ends)
        heapq.heappush(ends, arrival.ended)
        values = envelope.values_around(arrival.arrived)
        if values and all(v.paused for v in values):
            tally.violation(
                f"{endpoint}: job {arrival.job_id} arrived at {_when(arrival.arrived)}"
                " while the endpoint was paused"
            )
        limits = [v.max_in_flight for v in values]
        if not limits or None in limits:
            continue
        most = max(limit for limit in limits if limit is not None)
        if len(ends) > most:
            tally.violation(
                f"{endpoint}: {len(ends)} attempts in progress at {_when(arrival.arrived)}"
                f" (job {arrival.job_id}), max_in_flight {most}"
            )


def _check_rate(endpoint: str, arrivals: list[Arrival], envelope: _Envelope, tally: _Tally) -> None:
    # Starts i..j must fit in burst_i + allowed(t_j) - allowed(t_i - slack), each arrival lagging
    # its start by up to LATENCY_SLACK: (j + 1 - allowed(t_j)) <= (i - allowed(t_i - slack) +
    # burst_i) for every i <= j. One pass, keeping the least right-hand side so far.
    lowest: tuple[float, int] | None = None
    for j, arrival in enumerate(arrivals):
        bound = (
            j
            - envelope.allowed_until(arrival.arrived - LATENCY_SLACK)
            + envelope.burst_at(arrival.arrived)
        )
        if lowest is None or bound < lowest[0]:
            lowest = (bound, j)
        excess = j + 1 - envelope.allowed_until(arrival.arrived) - lowest[0]
        if excess > EPSILON:
            first = arrivals[lowest[1]]
            tally.violation(
                f"{endpoint}: {j - lowest[1] + 1} attempts arrived within"
                f" {arrival.arrived - first.arrived:.3f}s from {_when(first.arrived)},"
                f" {excess:.1f} more than its rate allowed"
            )


def check_rescues(run: Run) -> _Tally:
    """Every attempt ends within its deadline, and a job's attempts never overlap: a cut
    dispatcher's attempt is over before the leader can hand its claim to another. That needs the
    deadline under half the leader timeout, when a dispatcher without a heartbeat stops sending."""
    tally = _Tally()
    timing = run.timing
    if timing.attempt_deadline >= timing.leader_timeout / 2:
        tally.violation(
            f"an attempt may take {timing.attempt_deadline:g}s, not less than half the leader"
            f" timeout ({timing.leader_timeout:g}s): a cut dispatcher's attempt can outlive"
            " its claim"
        )
    for job_id, arrivals in _by_job(run.arrivals).items():
        for arrival, following in zip(arrivals, [*arrivals[1:], None], strict=True):
            tally.checked += 1
            took = arrival.ended - arrival.arrived
            if took > timing.attempt_deadline + LATENCY_SLACK:
                tally.violation(
                    f"job {job_id} attempt {arrival.attempt} lasted {took:.3f}s at the"
                    f" receiver, past the {timing.attempt_deadline:g}s deadline"
                )
            if following is not None and following.arrived < arrival.ended - EPSILON:
                tally.violation(
                    f"job {job_id} attempt {following.attempt} arrived at"
                    f" {_when(following.arrived)}, while attempt {arrival.attempt} was in"
                    " progress"
                )
    return tally


def _database_down(run: Run, start: float, end: float) -> float:
    """Seconds between `start` and `end` during which the soak had PostgreSQL restarting."""
    return sum(
        max(0.0, min(end, fault.ended) - max(start, fault.started))
        for fault in run.faults
        if fault.kind == "restart_postgres"
    )


def check_ticks(run: Run) -> _Tally:
    """Every fire time of a running cron has exactly one jobs row, in any state: those of its
    spec since its creation, last spec change or resume (crons.updated_at) up to the window's
    end, and those of every span the harness ran it unpaused. No row recorded after updated_at
    is at a time its spec does not fire (one recorded before may be: a leader whose clock is
    ahead records ticks early, by design)."""
    tally = _Tally()
    rows: dict[str, collections.Counter[float]] = collections.defaultdict(collections.Counter)
    for job in run.jobs:
        if job.cron_id:
            rows[job.cron_id][round(job.run_at, 6)] += 1
    current = [
        CronSpan(item.id, item.spec, item.updated_at, run.window_end)
        for item in run.crons
        if not item.paused
    ]
    owed: dict[str, set[float]] = collections.defaultdict(set)
    for span in current:
        owed[span.cron_id] |= _ticks(span.spec, span.start, span.end)
    for span in run.cron_spans:
        end = min(span.end, run.window_end)
        if span.end < run.window_end:
            # A span ended by a spec change or a pause: a tick of it still unrecorded then (no
            # leader held the lease, a leader killed or cut) is the old schedule's, which the
            # scheduler does not carry over (it owes ticks from the last change on); one a
            # leader had time to record must have its row. While PostgreSQL was down no leader
            # could record, so that time does not count toward it.
            end -= run.timing.leader_timeout + TICK_RECORD_SECONDS
            end -= _database_down(run, span.start, span.end)
        owed[span.cron_id] |= _ticks(span.spec, span.start, end)
    for cron_id, ticks in sorted(owed.items()):
        for tick in sorted(ticks):
            tally.checked += 1
            count = rows[cron_id][tick]
            if count != 1:
                tally.violation(f"cron {cron_id}: tick {_when(tick)} has {count} records")
    current_spans = {span.cron_id: span for span in current}
    fires = {span.cron_id: _ticks(span.spec, span.start, span.end) for span in current}
    for job in sorted(run.jobs, key=lambda j: j.run_at):
        span = current_spans.get(job.cron_id or "")
        if span is None or job.created_at <= span.start or not span.start < job.run_at <= span.end:
            continue
        if round(job.run_at, 6) not in fires[span.cron_id]:
            tally.violation(
                f"cron {span.cron_id}: a record at {_when(job.run_at)}, made after its spec"
                f" became {span.spec!r}, which does not fire then"
            )
    return tally


def _ticks(spec: str, start: float, end: float) -> set[float]:
    """The fire times t of `spec` with start < t <= end."""
    if end <= start:
        return set()
    after = dt.datetime.fromtimestamp(start, dt.UTC) + dt.timedelta(microseconds=1)
    until = dt.datetime.fromtimestamp(end, dt.UTC) + dt.timedelta(microseconds=1)
    times = cron.fire_times_between(cron.parse_spec(spec), after, until, 10**6)
    return {round(t.timestamp(), 6) for t in times}


def check_duplicates(run: Run) -> _Tally:
    """Deliveries answered 2xx more than once are no more than the deliveries the killed or cut
    dispatchers held, and each is one of those."""
    tally = _Tally()
    delivered = collections.Counter(a.job_id for a in run.arrivals if a.delivered)
    held = _held(run)
    tally.checked = len(delivered)
    repeats = {job_id: count - 1 for job_id, count in delivered.items() if count > 1}
    if sum(repeats.values()) > len(held):
        tally.violation(
            f"{sum(repeats.values())} repeated deliveries, more than the {len(held)} held by"
            " dispatchers killed or cut"
        )
    for job_id, extra in sorted(repeats.items()):
        if job_id not in held:
            tally.violation(
                f"job {job_id} was delivered {extra + 1} times, but no killed or cut dispatcher"
                " held it"
            )
    return tally


def check_threads(run: Run) -> _Tally:
    """At the end every dispatcher runs with all its threads, /readyz says ready, no process
    exited unless the harness made it, and each stops cleanly (status 0) on SIGTERM."""
    tally = _Tally()
    ending = run.ending
    tally.checked = len(ending.dispatchers) + len(ending.stop_codes) + 1
    if len(ending.dispatchers) != ending.expected_dispatchers:
        tally.violation(
            f"{len(ending.dispatchers)} live dispatchers at the end,"
            f" {ending.expected_dispatchers} running"
        )
    for dispatcher_id, down in sorted(ending.dispatchers.items()):
        if down:
            tally.violation(f"dispatcher {dispatcher_id} has threads down: {down}")
    if not ending.ready:
        tally.violation("/readyz did not answer ready at the end")
    for exit_line in ending.unexpected_exits:
        tally.violation(exit_line)
    for name, code in sorted(ending.stop_codes.items()):
        if code != 0:
            tally.violation(f"{name} exited with status {code} on SIGTERM at the end")
    return tally


RULES = {
    "outcomes": "Every job not cancelled ends delivered, or failed after its maximum attempts.",
    "not_early": "No attempt arrives before its job is due (database time), nor before the "
    "Retry-After its previous attempt was answered with.",
    "cancels": "No attempt starts after its cancel commits, beyond the claim-ahead window.",
    "limits": "Rate and in-flight limits are never exceeded, and nothing starts while its "
    "endpoint is paused.",
    "rescues": "Every attempt ends within its deadline, and a job's attempts never overlap (a cut "
    "dispatcher's attempt ends before its rescue).",
    "ticks": "Every tick of a running cron has exactly one record.",
    "duplicates": "Duplicates are at most the deliveries held by the dispatchers that were killed "
    "or cut.",
    "threads": "Every thread is alive at the end, and every process stops cleanly.",
}
CHECKS: dict[str, Callable[[Run], _Tally]] = {
    "outcomes": check_outcomes,
    "not_early": check_not_early,
    "cancels": check_cancels,
    "limits": check_limits,
    "rescues": check_rescues,
    "ticks": check_ticks,
    "duplicates": check_duplicates,
    "threads": check_threads,
}
