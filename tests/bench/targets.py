"""The targets the benchmark checks, each a comparison within one run."""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

from tests.bench import crons, dashboard, pooled, stats

MB = 1024.0
# Two runs of the same steady load differ by a few milliseconds here; a change under both
# bounds is noise.
NOISE_MS = 5.0
NOISE_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class Target:
    key: str  # a short name, the column of the history table
    name: str
    measured: float
    unit: str
    threshold: str
    passed: bool
    detail: str

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"


def _get(results: dict[str, Any], *path: str) -> Any:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def within_noise(before: float, after: float) -> bool:
    """`after` is no worse than `before` by more than the noise between two identical runs."""
    return after - before <= max(NOISE_MS, NOISE_FRACTION * before)


def evaluate(results: dict[str, Any]) -> list[Target]:
    """Every target, PASS or MISS; a scenario that did not run counts as a MISS."""
    found: list[Target] = []
    found += _accept_targets(results)
    found += _burst_targets(results)
    found += _steady_targets(results)
    found += _backlog_targets(results)
    found += _dashboard_targets(results)
    found += _retention_targets(results)
    found += _mixed_targets(results)
    found += _flow_cost_targets(results)
    found += _cron_scale_targets(results)
    found += _pooled_targets(results)
    found += _loss_targets(results)
    return found


def _accept_targets(results: dict[str, Any]) -> list[Target]:
    found = []
    for clients, row in sorted((_get(results, "accept") or {}).items(), key=lambda kv: int(kv[0])):
        ratio = stats.ratio(row["insert"]["rate"], row["noop"]["rate"])
        found.append(
            Target(
                f"Accept {clients} (%)",
                f"Accept rate ≥ 50% of the no-op ceiling ({clients} clients)",
                ratio * 100,
                "%",
                "≥ 50",
                ratio >= 0.5,
                f"POST /insert {row['insert']['rate']:,.0f}/s vs GET /healthz "
                f"{row['noop']['rate']:,.0f}/s",
            )
        )
    return found


BURST_SHARE = 0.85
BURST_DISPATCHERS = (1, 2)


def dispatchers_label(count: int) -> str:
    return f"{count} dispatcher{'s' if count > 1 else ''}"


def _burst_targets(results: dict[str, Any]) -> list[Target]:
    """One target per number of dispatchers. Earlier runs had one burst with one dispatcher and
    its own target ("Burst (%)", at least 70%), which their history rows keep."""
    found = []
    threshold = f"≥ {BURST_SHARE * 100:.0f}"
    for count in BURST_DISPATCHERS:
        label = dispatchers_label(count)
        series = _get(results, f"burst_{count}")
        pools = f"{count} requests pool{'s' if count > 1 else ''}"
        name = f"Burst with {label} ≥ {BURST_SHARE:.0%} of the ceiling of {pools}"
        if not series:
            found.append(
                Target(f"Burst {label} (%)", name, math.nan, "%", threshold, False, "not run")
            )
            continue
        runs = len(series["runs"])
        once = series["lost"] == 0 and series["duplicates"] == 0
        found.append(
            Target(
                f"Burst {label} (%)",
                f"{name} (median of {runs} run{'s' if runs > 1 else ''}), every job delivered once",
                series["ratio"] * 100,
                "%",
                threshold,
                series["ratio"] >= BURST_SHARE and once,
                f"{series['rate']:,.0f} deliveries/s vs {series['ceiling_rate']:,.0f}/s "
                f"(medians; runs {series['ratio_min']:.0%} to {series['ratio_max']:.0%}); "
                f"{series['delivered']:,} of {series['jobs']:,} delivered, "
                f"{series['duplicates']:,} duplicated",
            )
        )
    return found


# Issue 15's bounds on durable PostgreSQL: a job due alone is sent within 10 ms at p99.
STEADY_P99_MS = 10.0
STEADY_MAX_MS = 50.0
# A delivery in a steady flow may cost the dispatcher at most this much more than in a burst.
STEADY_CPU_RATIO = 1.25


def _rounds_detail(steady: dict[str, Any], field: str) -> str:
    rounds = steady.get("rounds") or []
    values = [r["lateness_ms"][field] for r in rounds]
    return "rounds " + " / ".join(f"{value:.1f}" for value in values) if values else ""


def _lateness_targets(steady: dict[str, Any] | None, label: str, key: str) -> list[Target]:
    late = (steady or {}).get("lateness_ms") or {"p99": math.nan, "max": math.nan}
    return [
        Target(
            f"{key} p99 (ms)",
            f"Steady p99 lateness < {STEADY_P99_MS:g} ms{label}",
            late["p99"],
            "ms",
            f"< {STEADY_P99_MS:g}",
            late["p99"] < STEADY_P99_MS,
            _rounds_detail(steady or {}, "p99"),
        ),
        Target(
            f"{key} max (ms)",
            f"Steady max lateness < {STEADY_MAX_MS:g} ms{label}",
            late["max"],
            "ms",
            f"< {STEADY_MAX_MS:g}",
            late["max"] < STEADY_MAX_MS,
            _rounds_detail(steady or {}, "max"),
        ),
    ]


def dispatcher_seconds(cpu: dict[str, Any]) -> float | None:
    """CPU seconds of every dispatcher together (parts `worker`, `worker2`, ...)."""
    parts = [value for part, value in cpu.items() if part.startswith("worker")]
    return None if not parts or None in parts else sum(parts)


def cpu_per_delivery_ms(cpu: dict[str, Any], deliveries: int) -> float:
    spent = dispatcher_seconds(cpu)
    return math.nan if spent is None or not deliveries else spent * 1000 / deliveries


def _steady_cpu_target(results: dict[str, Any]) -> list[Target]:
    rounds = _get(results, "steady_empty", "steady", "rounds") or []
    runs = _get(results, "burst_1", "runs") or []
    steady = [cpu_per_delivery_ms(r["cpu"], r["jobs"]) for r in rounds]
    burst = [cpu_per_delivery_ms(r["cpu"], r["delivered"]) for r in runs]
    if not steady or not burst:
        ratio = math.nan
    else:
        ratio = statistics.median(steady) / statistics.median(burst)
    return [
        Target(
            "Steady / burst CPU",
            "Dispatcher CPU per delivery, steady 200/s at most "
            f"{STEADY_CPU_RATIO:g} times the burst's (medians)",
            ratio,
            "ratio",
            f"≤ {STEADY_CPU_RATIO:g}",
            ratio <= STEADY_CPU_RATIO,
            "steady rounds "
            + " / ".join(f"{value:.2f}" for value in steady)
            + " ms, burst runs "
            + " / ".join(f"{value:.2f}" for value in burst)
            + " ms",
        )
    ]


def _steady_targets(results: dict[str, Any]) -> list[Target]:
    steady = _get(results, "steady_empty", "steady")
    return _lateness_targets(steady, "", "Steady") + _steady_cpu_target(results)


def _backlog_targets(results: dict[str, Any]) -> list[Target]:
    backlog = _get(results, "steady_backlog") or {}
    pending = f" with {backlog.get('backlog', 0):,} pending"
    found = _lateness_targets(backlog.get("steady"), pending, "Backlog")
    empty = _get(results, "steady_empty", "steady", "lateness_ms") or {}
    full = _get(backlog, "steady", "lateness_ms") or {}
    if empty and full:
        same = all(within_noise(empty[p], full[p]) for p in ("p50", "p99"))
        found.append(
            Target(
                "Backlog / empty p99",
                f"Steady lateness unchanged within noise{pending} (p99 pending / empty)",
                stats.ratio(full["p99"], empty["p99"]),
                "ratio",
                f"p50, p99 at most max({NOISE_MS:g} ms, {NOISE_FRACTION:.0%}) above empty",
                same,
                f"p50 {empty['p50']:.1f} → {full['p50']:.1f} ms, "
                f"p99 {empty['p99']:.1f} → {full['p99']:.1f} ms",
            )
        )
    rss = (backlog.get("rss_peak_kb") or math.nan) / MB
    found.append(
        Target(
            "RSS (MB)",
            f"Dispatcher RSS < 300 MB{pending}",
            rss,
            "MB",
            "< 300",
            rss < 300,
            "peak VmRSS/VmHWM",
        )
    )
    startup = backlog.get("startup") or {}
    times = [startup.get("active_s"), startup.get("probe_delivered_s")]
    slowest = math.nan if None in times else max(times)
    found.append(
        Target(
            "Start-up (s)",
            f"Dispatcher start-up < 30 s{pending}",
            slowest,
            "s",
            "< 30",
            slowest < 30,
            "until a job due 1 s after the start is delivered (no log line marks the end of "
            "the first reconcile)",
        )
    )
    return found


def _dashboard_targets(results: dict[str, Any]) -> list[Target]:
    measured = _get(results, "dashboard") or {}
    pages = measured.get("pages") or {}
    worst = max(pages.items(), key=lambda item: item[1]["p95_ms"], default=None)
    if worst is None:
        return [
            Target(
                "Pages p95 (ms)",
                "Dashboard pages p95 < 200 ms",
                math.nan,
                "ms",
                "< 200",
                False,
                "did not run",
            )
        ]
    name, page = worst
    return [
        Target(
            "Pages p95 (ms)",
            f"Every dashboard page p95 < {dashboard.TARGET_P95_MS:g} ms with "
            f"{measured['jobs']:,} jobs (slowest page)",
            page["p95_ms"],
            "ms",
            f"< {dashboard.TARGET_P95_MS:g}",
            page["p95_ms"] < dashboard.TARGET_P95_MS,
            f"slowest: {name} ({page['url']}), rounds "
            + " / ".join(f"{value:.0f}" for value in page["round_p95_ms"]),
        )
    ]


PRUNE_FACTOR = 2.0
ROWS_FACTOR = 1.2
SIZE_GROWTH = 0.2


def _rounds_text(retention: dict[str, Any], key: str, digits: int = 0) -> str:
    return " / ".join(f"{r[key]:,.{digits}f}" for r in retention["rounds"])


def _retention_targets(results: dict[str, Any]) -> list[Target]:
    """Pruning keeps up with sustained delivery: at least twice its rate, rows bounded by what
    the retention and two reconcile intervals hold, and the tables' size steady."""
    retention = _get(results, "retention")
    names = (
        (
            "Prune / delivery",
            f"Pruning runs at ≥ {PRUNE_FACTOR:g} times the delivery rate",
            "ratio",
        ),
        (
            "Retention rows",
            f"Rows in jobs and in delivery_attempts < {ROWS_FACTOR:g} times delivery rate times "
            "(retention + 2 reconcile intervals)",
            "ratio",
        ),
        (
            "Retention growth (%)",
            f"On-disk size of jobs and delivery_attempts grows < {SIZE_GROWTH:.0%} after two "
            "retention periods",
            "%",
        ),
    )
    thresholds = (f"≥ {PRUNE_FACTOR:g}", f"< {ROWS_FACTOR:g}", f"< {SIZE_GROWTH * 100:.0f}")
    if not retention:
        return [
            Target(key, name, math.nan, unit, threshold, False, "not run")
            for (key, name, unit), threshold in zip(names, thresholds, strict=True)
        ]
    ratio = retention["spread"]["prune_ratio"]
    whole = retention["whole"]
    measured = (ratio["median"], retention["rows_ratio"], retention["growth"] * 100)
    passed = (
        ratio["median"] >= PRUNE_FACTOR,
        retention["rows_ratio"] < ROWS_FACTOR,
        retention["growth"] < SIZE_GROWTH,
    )
    details = (
        f"prune {whole['prune_rate']:,.0f} jobs/s vs delivery {whole['delivery_rate']:,.0f}/s "
        f"over {len(retention['rounds'])} rounds; each round {_rounds_text(retention, 'prune_ratio', 1)}",
        f"peak {whole['peak_jobs']:,} jobs and {whole['peak_attempts']:,} attempts vs "
        f"{retention['bound_rows']:,.0f} ({whole['delivery_rate']:,.0f}/s, retention "
        f"{retention['retention_s']:g} s, reconcile {retention['reconcile_s']:g} s)",
        f"{retention['mb_start']:,.1f} → {whole['mb_end']:,.1f} MB; each round's end "
        + _rounds_text(retention, "mb_end", 1),
    )
    return [
        Target(key, name, value, unit, threshold, ok, detail)
        for (key, name, unit), threshold, value, ok, detail in zip(
            names, thresholds, measured, passed, details, strict=True
        )
    ]


MIXED_DISPATCHERS = (1, 2)
# Each limit is used to at least this share of what it allows (or of what the unlimited endpoint
# reached, when less), in every window after the first.
LIMIT_SHARE = 0.9
QUIET_P99_S = 1.0
# With many flow keys, a delivery costs at most this many times what it costs with few.
FLOW_COST_RATIO = 1.2


def _windows_text(values: list[float]) -> str:
    return "windows " + " / ".join(f"{value:.0%}" for value in values) if values else "no window"


def _minimum(values: list[float]) -> float:
    return min(values) if values else math.nan


def bound_uses(mixed: dict[str, Any]) -> dict[str, float]:
    """Each bound's worst use in a mixed run (at most 1 while it held): the rate limit's peak
    burst over its bucket, the concurrent requests over max_in_flight, and the flow keys'."""
    uses = {
        "rate limit": mixed["rated"]["bound_use"],
        "max_in_flight": stats.ratio(
            mixed["slots"]["max_concurrent"], mixed["slots"]["max_in_flight"]
        ),
    }
    flows = mixed.get("flows")
    if flows:
        uses["flow rate"] = flows["bound_use"]
        uses["flow max_in_flight 1"] = float(flows["single_max_concurrent"])
    return uses


def flow_keys() -> set[str]:
    """The targets measured only when the server takes a job's `flow` field."""
    found = {f"Mixed {count} flows (%)" for count in MIXED_DISPATCHERS}
    return found | {target.key for target in _flow_cost_targets({})}


def _mixed_targets(results: dict[str, Any]) -> list[Target]:
    found = []
    share = f"≥ {LIMIT_SHARE * 100:.0f}"
    for count in MIXED_DISPATCHERS:
        label = dispatchers_label(count)
        mixed = _get(results, f"mixed_{count}")
        names = (
            (
                f"Mixed {count} rate (%)",
                f"Rate-limited endpoint delivers ≥ {LIMIT_SHARE:.0%} of min(limit, unlimited "
                f"endpoint's rate) in every window after the first ({label})",
                "%",
                share,
            ),
            (
                f"Mixed {count} slots busy (%)",
                f"max_in_flight endpoint: slots kept busy ≥ {LIMIT_SHARE:.0%} while it had a "
                f"backlog, after the first window ({label})",
                "%",
                share,
            ),
            (
                f"Mixed {count} quiet p99 (s)",
                f"Quiet endpoint beside the backlogs: lateness p99 ≤ {QUIET_P99_S:g} s ({label})",
                "s",
                f"≤ {QUIET_P99_S:g}",
            ),
            (
                f"Mixed {count} flows (%)",
                f"Flow keys deliver ≥ {LIMIT_SHARE:.0%} of min(their rates, unlimited "
                f"endpoint's rate) in every window after the first ({label})",
                "%",
                share,
            ),
            (
                f"Mixed {count} bounds (%)",
                f"Limits never exceeded: worst use of a bound ≤ 100% ({label})",
                "%",
                "≤ 100",
            ),
            (
                f"Mixed {count} lost + duplicated",
                f"Mixed load: every job delivered once ({label})",
                "jobs",
                "= 0",
            ),
        )
        if not mixed:
            found += [
                Target(key, name, math.nan, unit, threshold, False, "not run")
                for key, name, unit, threshold in names
            ]
            continue
        rated, slots, flows = mixed["rated"], mixed["slots"], mixed.get("flows")
        rate_min = _minimum(rated["ratios"])
        quiet = mixed["quiet_lateness_ms"]["p99"] / 1000
        flow_min = _minimum(flows["ratios"]) if flows else math.nan
        uses = bound_uses(mixed)
        worst = max(uses.values())
        wrong = mixed["lost"] + mixed["duplicates"]
        skipped = mixed.get("flows_skipped")
        flow_detail = (
            f"skipped: {skipped}"
            if skipped
            else f"{flows['keys']:,} keys at {flows['rate']:g}/s; " + _windows_text(flows["ratios"])
        )
        bounds_detail = ", ".join(f"{name} {use:.0%}" for name, use in uses.items())
        peak = rated.get("peak")
        if peak and peak["starts"]:
            bounds_detail += (
                f"; the rate limit's peak: {peak['starts']:,} starts in {peak['span_s']:.3f} s "
                f"from {peak['from_s']:.2f} s after the instant"
            )
        worst_key = (flows or {}).get("worst_peak")
        if worst_key and worst_key["starts"]:
            bounds_detail += (
                f"; the busiest flow key, {flows['worst_key']}: {worst_key['starts']} starts in "
                f"{worst_key['span_s']:.3f} s"
            )
        if skipped:
            bounds_detail += "; flow keys not checked (skipped)"
        measured = (rate_min * 100, slots["busy"] * 100, quiet, flow_min * 100, worst * 100, wrong)
        passed = (
            rate_min >= LIMIT_SHARE,
            slots["busy"] >= LIMIT_SHARE,
            quiet <= QUIET_P99_S,
            flow_min >= LIMIT_SHARE,
            worst <= 1.0,
            wrong == 0,
        )
        details = (
            f"limit {rated['rate']:g}/s, unlimited endpoint {mixed['unlimited_rate']:,.0f}/s; "
            + _windows_text(rated["ratios"]),
            f"max_in_flight {slots['max_in_flight']}, answers in {slots['answer_s']:g} s, "
            f"over {slots['busy_span_s']:.0f} s; " + _windows_text(slots["busy_windows"]),
            f"p50 {mixed['quiet_lateness_ms']['p50']:.0f} ms, max "
            f"{mixed['quiet_lateness_ms']['max']:.0f} ms",
            flow_detail,
            bounds_detail + f" (windows granted {mixed['slack_s'] * 1000:.0f} ms for the receiver)",
            f"{mixed['delivered']:,} of {mixed['jobs']:,} delivered, {mixed['lost']:,} lost, "
            f"{mixed['duplicates']:,} duplicated",
        )
        found += [
            Target(key, name, value, unit, threshold, ok, detail)
            for (key, name, unit, threshold), value, ok, detail in zip(
                names, measured, passed, details, strict=True
            )
        ]
    return found


def flow_cost_figures(cost: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per number of keys: claim time (scheduler_claim_seconds_total; NaN where a dispatcher does
    not export it), wall, PostgreSQL and dispatcher CPU milliseconds per delivery."""
    found = {}
    for keys, part in cost["rounds"].items():
        delivered = part["delivered"]
        pg = part["cpu"].get("postgres")
        claim_ms = part.get("claim_ms_per_delivery")
        found[keys] = {
            "claim_ms": math.nan if claim_ms is None else claim_ms,
            "wall_ms": part["wall_s"] * 1000 / delivered if delivered else math.nan,
            "postgres_ms": pg * 1000 / delivered if pg is not None and delivered else math.nan,
            "dispatcher_ms": cpu_per_delivery_ms(part["cpu"], delivered),
        }
    return found


def _flow_cost_targets(results: dict[str, Any]) -> list[Target]:
    cost = _get(results, "flow_cost")
    names = (
        ("Flow cost PostgreSQL", "PostgreSQL CPU", "postgres_ms"),
        ("Flow cost claim", "Claim time", "claim_ms"),
    )
    threshold = f"≤ {FLOW_COST_RATIO:g}"
    if not cost or cost.get("skipped"):
        detail = f"skipped: {cost['skipped']}" if cost else "not run"
        return [
            Target(
                key,
                f"{what} per delivery with many flow keys over few",
                math.nan,
                "ratio",
                threshold,
                False,
                detail,
            )
            for key, what, _ in names
        ]
    few, many = str(min(cost["keys"])), str(max(cost["keys"]))
    figures = flow_cost_figures(cost)
    once = all(p["lost"] == 0 and p["duplicates"] == 0 for p in cost["rounds"].values())
    found = []
    for key, what, field in names:
        ratio = stats.ratio(figures[many][field], figures[few][field])
        found.append(
            Target(
                key,
                f"{what} per delivery with {int(many):,} flow keys at most {FLOW_COST_RATIO:g} "
                f"times that with {int(few):,}, every job delivered once",
                ratio,
                "ratio",
                threshold,
                ratio <= FLOW_COST_RATIO and once,
                f"{figures[many][field]:.3f} ms vs {figures[few][field]:.3f} ms per delivery, "
                f"{cost['jobs']:,} jobs each",
            )
        )
    return found


# Issue 22's bounds for crons at scale: a tick recorded within a second of its time at p99, a
# POST /cron of the most crons it takes answered within 2 s and each of them firing within 2 s
# of the answer.
CRON_TICK_P99_MS = 1000.0
CRON_POST_MS = 2000.0
CRON_FIRE_MS = 2000.0


def _ticks_detail(ticks: dict[str, Any]) -> str:
    late = ticks["lateness_ms"]
    states = ", ".join(f"{state} {count:,}" for state, count in ticks["states"].items())
    return (
        f"{ticks['recorded']:,} of {ticks['expected']:,} ticks recorded, {ticks['missing']:,} "
        f"missing, {ticks['extra']:,} extra, {ticks['missed_inside_window']:,} missed inside the "
        f"catch-up window ({states or 'no rows'}); tick to record p50 {late['p50']:,.0f} ms, "
        f"max {late['max']:,.0f} ms"
    )


def _tick_targets(part: dict[str, Any] | None, key: str, what: str) -> tuple[Target, Target]:
    """Every tick recorded once and the p99 from tick to record, of one cron scenario."""
    ticks = (part or {}).get("ticks")
    recorded = Target(
        f"{key} recorded (%)",
        f"{what}: every tick recorded once",
        ticks["recorded_pct"] if ticks else math.nan,
        "%",
        "= 100, none extra",
        ticks is not None and crons.complete(ticks),
        _ticks_detail(ticks) if ticks else "not run",
    )
    # A tick is recorded once its row is visible to others: the commit, as a reader saw it, not
    # created_at, the start of the transaction that wrote it.
    seen = (part or {}).get("seen_ms") or {}
    late = ticks["lateness_ms"] if ticks else {}
    # The reader can miss a record (one committed before it first looked): then the start of the
    # recording transaction is what is known, a bound from below.
    seen_known = bool(seen) and not math.isnan(seen["p99"])
    p99 = seen["p99"] if seen_known else late.get("p99", math.nan)
    lateness = Target(
        f"{key} p99 (ms)",
        f"{what}: p99 from tick to record (committed, as a reader sees it) < "
        f"{CRON_TICK_P99_MS:,.0f} ms",
        p99,
        "ms",
        f"< {CRON_TICK_P99_MS:,.0f}",
        p99 < CRON_TICK_P99_MS,
        (
            f"max {seen['max']:,.0f} ms; the recording transaction began (created_at - run_at) "
            f"p99 {late['p99']:,.0f} ms after the tick"
            if seen_known and late
            else f"no reader saw the commit; the recording transaction began p99 "
            f"{late['p99']:,.0f} ms after the tick"
            if late
            else "not run"
        ),
    )
    return recorded, lateness


def _cron_scale_targets(results: dict[str, Any]) -> list[Target]:
    plan = results.get("plan") or {}
    shared = _get(results, "cron_boundary")
    seconds = _get(results, "cron_seconds")
    failover = _get(results, "cron_failover")
    count = plan.get("cron_scale_count", 0)
    spec = plan.get("cron_boundary_spec", "")
    found = [
        *_tick_targets(shared, "Cron boundary", f"{count:,} crons sharing a boundary (`{spec}`)"),
        *_tick_targets(
            seconds,
            "Cron seconds",
            f"{plan.get('cron_seconds_count', 0):,} every-second crons for "
            f"{plan.get('cron_seconds_window', 0)} s",
        ),
    ]
    post = (shared or {}).get("post")
    answer_ms = post["answer_s"] * 1000 if post else math.nan
    fire_ms = post["all_s"] * 1000 if post else math.nan
    found.append(
        Target(
            "Cron POST (ms)",
            f"POST /cron of {count:,} every-second crons answered < {CRON_POST_MS:,.0f} ms",
            answer_ms,
            "ms",
            f"< {CRON_POST_MS:,.0f}",
            answer_ms < CRON_POST_MS,
            "a new set; replacing it by as many others took "
            f"{shared['replace_answer_s'] * 1000:,.0f} ms"
            if shared
            else "not run",
        )
    )
    found.append(
        Target(
            "Cron POST to fire (ms)",
            f"Each of those crons has its first tick recorded < {CRON_FIRE_MS:,.0f} ms after the "
            "answer (created_at - answer, the last cron's)",
            fire_ms,
            "ms",
            f"< {CRON_FIRE_MS:,.0f}",
            fire_ms < CRON_FIRE_MS,
            f"{post['fired']:,} of {post['crons']:,} fired; the first "
            f"{post['first_s'] * 1000:,.0f} ms, half by {post['p50_s'] * 1000:,.0f} ms"
            if post
            else "not run",
        )
    )
    whole = (failover or {}).get("whole")
    detail = "not run"
    if failover and whole:
        gap = failover["gap"]
        detail = (
            f"leader killed; lease taken after {failover['lease_taken_s']:.1f} s, ticks recorded "
            f"again {failover['resumed_s']:.1f} s after the kill; the gap's {gap['recorded']:,} "
            f"of {gap['expected']:,} ticks recorded, up to {gap['lateness_ms']['max'] / 1000:.1f} "
            f"s late; since the crons' start: " + _ticks_detail(whole)
        )
    found.append(
        Target(
            "Cron failover recorded (%)",
            f"Leader killed under {plan.get('cron_seconds_count', 0):,} every-second crons: "
            "every tick inside the catch-up window recorded once",
            whole["recorded_pct"] if whole else math.nan,
            "%",
            "= 100, none extra",
            whole is not None and crons.complete(whole),
            detail,
        )
    )
    return found


# Issue 23: through a transaction-mode pooler and without a direct URL, where no notice reaches
# the dispatchers, a job inserted due now starts within a second at p95.
DUE_NOW_P95_MS = 1000.0
POOLED = " through a transaction-mode pooler, no direct URL"


def _pooled_targets(results: dict[str, Any]) -> list[Target]:
    """The direct steady bounds, a job due now within DUE_NOW_P95_MS, and every job delivered
    once, with the processes through the pooler."""
    steady = _get(results, "pooled_steady", "steady")
    found = _lateness_targets(steady, POOLED, "Pooled steady")
    if steady is None:
        found = [dataclasses.replace(t, detail="not run") for t in found]
    due = _get(results, "pooled_due_now") or {}
    late = due.get("lateness_ms") or {"p95": math.nan}
    detail = "not run"
    if "jobs" in due:
        detail = (
            f"{due['delivered']:,} of {due['jobs']:,} arrived; from the answer p50 "
            f"{late['p50']:,.0f} ms, p99 {late['p99']:,.0f} ms, max {late['max']:,.0f} ms; the "
            f"inserts answered in p50 {due['answer_ms']['p50']:,.0f} ms; each dispatcher looks "
            f"every {due['look_interval_s']:g} s"
        )
    found.append(
        Target(
            "Pooled due now p95 (ms)",
            f"A job inserted due now arrives < {DUE_NOW_P95_MS:,.0f} ms after the insert's "
            f"answer at p95{POOLED}",
            late["p95"],
            "ms",
            f"< {DUE_NOW_P95_MS:,.0f}",
            late["p95"] < DUE_NOW_P95_MS,
            detail,
        )
    )
    lost, duplicated, parts = pooled.lost_and_duplicated(results)
    ran = bool(parts)
    found.append(
        Target(
            "Pooled lost + duplicated",
            f"Steady, burst and due now{POOLED}: every job delivered once",
            lost + duplicated if ran else math.nan,
            "jobs",
            "= 0",
            len(parts) == len(pooled.SCENARIOS) and lost + duplicated == 0,
            "lost/duplicated: " + ", ".join(parts) if ran else "not run",
        )
    )
    reason = pooled.skipped(results)
    if reason:
        found = [dataclasses.replace(t, detail=f"skipped: {reason}") for t in found]
    return found


def loss_totals(results: dict[str, Any]) -> tuple[int, int, list[str]]:
    """Lost and duplicated deliveries over every scenario that delivers, and each one's share."""
    lost = duplicated = 0
    parts = []
    for name, path, lost_key, repeat_key in (
        *(
            (f"burst with {dispatchers_label(n)}", (f"burst_{n}",), "lost", "duplicates")
            for n in BURST_DISPATCHERS
        ),
        ("steady", ("steady_empty", "steady"), "lost", "duplicates"),
        ("steady with backlog", ("steady_backlog", "steady"), "lost", "duplicates"),
        ("cron ticks", ("cron",), "missed", "duplicated"),
        ("retention", ("retention",), "lost", "duplicates"),
        *(
            (f"mixed with {dispatchers_label(n)}", (f"mixed_{n}",), "lost", "duplicates")
            for n in MIXED_DISPATCHERS
        ),
    ):
        part = _get(results, *path)
        if part:
            lost += part[lost_key]
            duplicated += part[repeat_key]
            parts.append(f"{name} {part[lost_key]:,}/{part[repeat_key]:,}")
    return lost, duplicated, parts


# The scenarios loss_totals adds up: the bursts, steady, steady with backlog, cron, retention,
# the mixed runs.
LOSS_PARTS = len(BURST_DISPATCHERS) + 4 + len(MIXED_DISPATCHERS)
LOSS_KEYS = ("Lost", "Duplicated")


def losses_complete(results: dict[str, Any]) -> bool:
    """Every scenario that delivers ran, so the lost and duplicated totals cover the whole run."""
    return len(loss_totals(results)[2]) == LOSS_PARTS


def _loss_targets(results: dict[str, Any]) -> list[Target]:
    lost, duplicated, parts = loss_totals(results)
    complete = len(parts) == LOSS_PARTS
    scope = "lost/duplicated: " + (", ".join(parts) or "nothing ran")
    return [
        Target(
            LOSS_KEYS[0], "Zero lost deliveries", lost, "jobs", "= 0", lost == 0 and complete, scope
        ),
        Target(
            LOSS_KEYS[1],
            "Zero duplicated deliveries",
            duplicated,
            "jobs",
            "= 0",
            duplicated == 0 and complete,
            scope,
        ),
    ]
