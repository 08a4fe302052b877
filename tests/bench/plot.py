"""The lateness figure: distributions of the bursts and both steady runs, and the steady runs over
time. Needs matplotlib, which only the benchmark uses."""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def draw(results: dict[str, Any], path: pathlib.Path) -> bool:
    """Write the PNG; False (and nothing written) when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    backlog = results["plan"]["backlog"]
    series = [
        *(
            (
                f"burst, {count} dispatcher{'s' if count > 1 else ''}",
                [v for run in results[f"burst_{count}"]["runs"] for v in run["lateness_s"]],
            )
            for count in (1, 2)
            if results.get(f"burst_{count}")
        ),
        ("steady", ((results.get("steady_empty") or {}).get("steady") or {}).get("lateness_s")),
        (
            f"steady, {backlog:,} pending",
            ((results.get("steady_backlog") or {}).get("steady") or {}).get("lateness_s"),
        ),
    ]
    series = [(label, values) for label, values in series if values]
    if not series:
        return False
    figure, (cdf, over_time) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    for label, values in series:
        ms = sorted(max(value * 1000, 0.1) for value in values)
        cdf.plot(ms, [(i + 1) / len(ms) for i in range(len(ms))], label=f"{label} (n={len(ms):,})")
    cdf.set_xscale("log")
    cdf.set_xlabel("lateness (ms, log scale)")
    cdf.set_ylabel("fraction of jobs delivered")
    cdf.set_title("Lateness distribution")
    for at in (50, 250):
        cdf.axvline(at, color="grey", linestyle=":", linewidth=1)
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(loc="lower right")

    for label, key in (
        ("steady", "steady_empty"),
        (f"steady, {backlog:,} pending", "steady_backlog"),
    ):
        points = ((results.get(key) or {}).get("steady") or {}).get("series")
        if points:
            over_time.plot(
                [p[0] for p in points],
                [p[1] * 1000 for p in points],
                ".",
                markersize=2,
                label=label,
            )
    over_time.set_xlabel("due time (s from the first job)")
    over_time.set_ylabel("lateness (ms)")
    over_time.set_title("Steady runs over time")
    over_time.grid(True, alpha=0.3)
    over_time.legend(loc="upper right", markerscale=5)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return True
