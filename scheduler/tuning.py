"""The processes' and the storage's fixed timings and sizes, each with why it has its value.

These are not settings: nothing reads them from the environment (config.py holds those). A
change here is a change of behaviour, to be shown in `make bench` or argued in the commit.
"""

from __future__ import annotations

from typing import Any

# --- claiming -----------------------------------------------------------------------------------

# Jobs due this soon are claimed already and their sending threads wait for the due time on this
# host's clock, so a send starts at its time instead of a claim's round trip after it. A cancel
# in this last stretch no longer stops the job.
CLAIM_AHEAD_SECONDS = 0.05
# The claim loop looks this long before the next job is due: time enough for a claim's round
# trip. Everything due in the rest of the window shares that claim, so jobs due one after another
# (a steady flow) are claimed several at a time rather than one look and one claim each.
LOOK_BEFORE_DUE_SECONDS = 0.01
# An endpoint held by max_in_flight is looked at again this soon: the delivery that frees a slot
# may be another dispatcher's, which no event here announces.
IN_FLIGHT_RECHECK_SECONDS = 0.25
# How many of a keyed endpoint's flow keys one claim may look at, in turn (deliveries.key_turns):
# it looks at one for each delivery it may start, and at more only while too few of those could
# take one (keys held back by their own limits are stepped over), up to FLOW_KEYS_PER_START for
# each delivery it may start, at least FLOW_KEYS_MIN_LOOK and at most FLOW_KEYS_PER_LOOK, so
# that a claim's cost follows what it claims, not how many keys there are.
FLOW_KEYS_PER_START = 4
FLOW_KEYS_MIN_LOOK = 16
FLOW_KEYS_PER_LOOK = 256
# A change of pauses or limits made on another dispatcher holds here within this, even if its
# notification was lost.
ENDPOINT_RELOAD_SECONDS = 1.0

# --- sending and recording ----------------------------------------------------------------------

# Slots per sending thread: with two, the next delivery is already claimed when a thread comes
# free, and a claim never holds more than the threads can send within one lease.
SLOTS_PER_THREAD = 2
# A claim's lease outlives the longest wait it can have (one full attempt of the delivery ahead
# of it in its thread, then its own) by this much, for the recording of its outcome.
LEASE_MARGIN_SECONDS = 30.0
# Outcomes per recording transaction: a burst's outcomes pile up faster than one commit a
# delivery, and 500 rows keep a transaction well under the lease.
RECORD_BATCH = 500
# The recorder waits for more outcomes before writing a batch, so that jobs due one at a time (a
# steady flow) share a transaction too, for a few milliseconds' delay in their state: up to
# RECORD_LINGER_SECONDS while the claim loop has room, RECORD_LINGER_WHEN_FULL_SECONDS once it
# waits for the slots that recording frees, and RECORD_LINGER_WHEN_HELD_SECONDS while a paused,
# limited or keyed endpoint holds deliveries (its max_in_flight counts each until recorded).
RECORD_LINGER_SECONDS = 0.05
RECORD_LINGER_WHEN_FULL_SECONDS = 0.01
RECORD_LINGER_WHEN_HELD_SECONDS = 0.002
# Tries to record a batch while the database is away (waiting 1, 2, 4, 8 s between them): past
# that, the leases make the deliveries due again, which at-least-once delivery allows.
RECORD_RETRIES = 5
# How often an expired attempt that has no socket yet (still connecting) is looked at again.
WATCHDOG_RECHECK_SECONDS = 0.1

# --- membership and leadership ------------------------------------------------------------------

# Heartbeats are at most this far apart, and at least five fit in SCHEDULER_LEADER_TIMEOUT, so a
# slow round trip or two never makes a live dispatcher look dead.
HEARTBEAT_SECONDS = 2.0
# A skew beyond this is logged: cron ticks fire on the leader's clock (docs/operations.md).
SKEW_WARNING_SECONDS = 1.0
# A follower tries for the lock this often (at least ten times within the leader timeout), so a
# vanished leader's duties pass on soon after its lock is freed.
CAMPAIGN_SECONDS = 1.0
# The leader confirms its lock and epoch this often (at least five times within the leader
# timeout), and stops acting once it cannot.
PROBE_SECONDS = 2.0

# --- timers (the leader's APScheduler) ----------------------------------------------------------

# No tick recorded this late or less is missed, whatever its cron's catch-up window (0 included):
# later than any timer pass runs when the leader is healthy, earlier than anyone would call on
# time.
TICK_LATENESS_TOLERATED_SECONDS = 2.0
# Rows one statement recording cron ticks may insert: 10,000 crons sharing a schedule record their
# tick in one, and a long catch-up is cut into statements that each commit what they recorded.
TICK_ROWS_PER_STATEMENT = 20_000
# Parsed cron specs each process keeps (cron.parse_spec): a POST /cron of 10,000 crons checks and
# stores each spec, and the leader computes each schedule's ticks every time it fires.
PARSED_SPECS_CACHED = 10_000
# A wake timer already set this close to the wanted time is left alone: each claim loop's plan
# asks for it again, and rewriting it is a jobstore write.
WAKE_TOLERANCE_SECONDS = 0.25
# APScheduler retries a jobstore it could not reach after this many seconds.
JOBSTORE_RETRY_SECONDS = 2.0

# --- loops that wait out a failure --------------------------------------------------------------

# A loop that failed (the database away, or a bug logged with its stack) runs again after this:
# soon enough to lose little time, slow enough not to flood the log.
LOOP_RETRY_SECONDS = 1.0
# The listener reconnects after 1 s, doubling up to this, so a database that stays down is not
# asked for a connection every second by every dispatcher.
LISTEN_MAX_RETRY_SECONDS = 5.0
# One wait for notifications lasts this long, so a stop is noticed within it.
LISTEN_WAIT_SECONDS = 1.0
# A long-lived thread that failed unexpectedly is restarted after this, doubling at each failure
# in a row up to THREAD_RESTART_MAX_SECONDS (worker/supervisor.py): the first restart comes soon
# enough to lose little, and a thread that keeps failing neither spins nor floods the log. The cap
# is under half of LEASE_MARGIN_SECONDS, so a watchdog down for one backoff still cuts both
# attempts a claim's lease covers before the lease runs out.
THREAD_RESTART_FIRST_SECONDS = 1.0
THREAD_RESTART_MAX_SECONDS = 10.0
# A thread that ran this long before failing starts again from the first backoff: it was healthy,
# not failing in a loop.
THREAD_HEALTHY_SECONDS = 60.0
# The main thread waits in slices of this, so that a signal's handler always gets to run.
SIGNAL_CHECK_SECONDS = 1.0
# A thread given this long to end at shutdown is left behind (they are daemons) rather than
# holding the exit past the shutdown grace.
JOIN_SECONDS = 5.0

# --- maintenance (the leader) -------------------------------------------------------------------

# Rows per pruning statement: 5,000 pruned about a fifth faster than 1,000 on a durable
# PostgreSQL, and more did no better (docs/operations.md, "Retention").
PRUNE_BATCH = 5000
# A pass takes at most this share of the leader's maintenance tick (plus one batch of each kind),
# so rescues keep their pace and deliveries keep their connections while a backlog is worked off.
PRUNE_SHARE = 0.5
# Rows of dispatchers that vanished without leaving are kept this long, for a look afterwards.
DEAD_DISPATCHER_SECONDS = 3600.0
# The per-minute delivery rollup is kept this long: the dashboard shows its last hour.
DELIVERY_MINUTES_RETENTION_SECONDS = 24 * 3600.0

# --- connections --------------------------------------------------------------------------------

# A dispatcher's connections, which SCHEDULER_DB_CONNECTIONS bounds (config.Settings.
# dispatcher_pool_size splits it; docs/operations.md, "Connections"):
# the listener's own connection, for LISTEN.
LISTEN_CONNECTIONS = 1
# The delivery pool: the claim loop and the recorder, one each. Their commits (claims, outcomes)
# need not wait for the disk: one lost in a crash of PostgreSQL makes its job due again, after
# its lease, and it is sent again, which at-least-once delivery allows.
DELIVERY_POOL_SIZE = 2
# APScheduler's SQLAlchemy engine, on the leader: one connection, since APScheduler holds its
# jobstores lock around every use of the jobstore (a timer pass, a wake timer set from the claim
# loop, a cron synchronised from the listener), so they take turns anyway.
TIMER_ENGINE_POOL = {"pool_size": 1, "max_overflow": 0}
TIMER_ENGINE_CONNECTIONS = TIMER_ENGINE_POOL["pool_size"] + TIMER_ENGINE_POOL["max_overflow"]
# The dispatcher's own pool takes what is left, between these: its heartbeat, the campaign, the
# endpoint routes, and the leader's ticks and maintenance each use one at a time (senders use
# none), so more than one each would stay idle, and fewer than two would leave the heartbeat
# waiting behind the leader's work.
DISPATCHER_POOL_MIN = 2
DISPATCHER_POOL_MAX = 5
# A pooled connection not handed out for longer than this is pinged before use: one in steady
# use has just proved itself, and a ping on every checkout doubled a request's round trips.
IDLE_CHECK_SECONDS = 1.0
# A request waits this long for a pooled connection before it is answered 503.
POOL_TIMEOUT_SECONDS = 5.0
# Connections are replaced after this long, so that a server-side change (a failover, a
# parameter) reaches every connection within it.
POOL_MAX_LIFETIME_SECONDS = 1800.0
# libpq keepalives and timeouts, so that a silently dropped connection fails in seconds, not
# hours.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20000,
    "connect_timeout": 5,
}

# --- the web process's requests ------------------------------------------------------------------

# A request has this long from its first byte (or from the connection, for the first request) to
# arrive whole, head and body, before it is answered 408: it waits in the worker's event loop
# meanwhile, not in a thread (web/buffering.py). The API's clients are programs sending at most
# SCHEDULER_MAX_BODY_BYTES (1 MiB by default, so at 100 KiB/s or more).
REQUEST_READ_SECONDS = 10.0
# The most a request's head (request line and headers) may take; more is answered 431. Heroku's
# router allows 8 KiB per header line, and our requests need a few short ones.
REQUEST_HEAD_MAX_BYTES = 32 * 1024
# Connections each gunicorn worker holds at once, waiting ones included: each may hold a head
# and a body in memory while it arrives, so this bounds a worker's memory (256 x 1 MiB at most)
# as well as the slow clients it outlasts. A platform's router keeps far fewer.
WEB_CONNECTIONS_PER_WORKER = 256

# --- announcing new jobs ------------------------------------------------------------------------

# The web process announces a job due within the poll interval plus this (Settings.
# announce_within): the margin covers a slow look for due jobs and clock drift between the web
# and dispatcher hosts.
ANNOUNCE_MARGIN_SECONDS = 5.0

# Where no notice can reach the dispatchers (a transaction-mode pooler and no DATABASE_DIRECT_URL),
# each looks for due deliveries at least this often, and the leader resynchronises its cron timers
# at each maintenance tick: a job due now starts within about this, and a new cron within a tick.
NOTICELESS_LOOK_SECONDS = 0.5
