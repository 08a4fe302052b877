"""The built wheel, not the checkout, migrates a database: it ships sql/ and the storage queries.

One slow test (a few seconds): it builds and installs a wheel of the project.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests import support
from tests.integration.test_migrate import (
    declared_tables,
    empty_database,
    ledger,
    sql_files,
    tables,
)

# Everything in the checkout that a build does not need (and .scheduler holds a live server).
NOT_BUILT = (
    ".git",
    ".venv",
    ".scheduler",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    "tests",
    "docs",
)


def _venv_builds_wheels() -> bool:
    """True when setuptools here can make a wheel by itself (bdist_wheel: `wheel` or >= 70.1)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    major, minor = (
        int(part) for part in re.findall(r"\d+", importlib.metadata.version("setuptools"))[:2]
    )
    return (major, minor) >= (70, 1)


def _run(
    args: list[str], timeout: float, env: dict[str, str], cwd: pathlib.Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=cwd
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture
def fresh_url(server_url: str) -> Iterator[str]:
    with empty_database(server_url) as url:
        yield url


@pytest.fixture
def wheel_site(tmp_path: pathlib.Path) -> pathlib.Path:
    """A wheel of a copy of the checkout, installed alone (no dependencies) into a folder."""
    source = tmp_path / "src"
    shutil.copytree(support.ROOT, source, ignore=shutil.ignore_patterns(*NOT_BUILT))
    dist = tmp_path / "dist"
    # Without `wheel` in the venv, pip builds in an isolated env with setuptools from the index.
    isolation = ["--no-build-isolation"] if _venv_builds_wheels() else []
    pip_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            *isolation,
            "-w",
            str(dist),
            str(source),
        ],
        timeout=180,
        env=pip_env,
    )
    wheels = sorted(dist.glob("scheduler-*.whl"))
    assert len(wheels) == 1, wheels
    site = tmp_path / "site"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(wheels[0]),
        ],
        timeout=120,
        env=pip_env,
    )
    return site


@pytest.mark.timeout(300)
def test_slow_installed_wheel_migrates_a_fresh_database(
    wheel_site: pathlib.Path, fresh_url: str, tmp_path: pathlib.Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "DATABASE_URL") and not key.startswith("SCHEDULER_")
    }
    env["PYTHONPATH"] = str(wheel_site)

    where = _run(
        [
            sys.executable,
            "-c",
            "import scheduler, scheduler.storage.migrate as m; print(scheduler.__file__);"
            " print(m._migrations_folder())",
        ],
        timeout=60,
        cwd=elsewhere,
        env=env,
    )
    module_file, migrations_folder = where.stdout.split()
    assert pathlib.Path(module_file).resolve().is_relative_to(wheel_site.resolve())
    assert pathlib.Path(migrations_folder).resolve().is_relative_to(wheel_site.resolve())
    assert sorted(p.name for p in pathlib.Path(migrations_folder).glob("*.sql")) == sorted(
        sql_files()
    )
    shipped = {p.name for p in (wheel_site / "scheduler" / "storage").glob("*.sql")}
    assert shipped == {p.name for p in (support.ROOT / "scheduler" / "storage").glob("*.sql")}
    assert (wheel_site / "scheduler" / "web" / "app.py").is_file()

    migrated = _run(
        [sys.executable, "-m", "scheduler", "migrate", "--database-url", fresh_url],
        timeout=60,
        cwd=elsewhere,
        env=env,
    )

    assert f"applied {len(sql_files())} migration(s)" in migrated.stdout
    assert ledger(fresh_url) == sorted(sql_files().items())
    assert tables(fresh_url) == declared_tables()
