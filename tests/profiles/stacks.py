"""Sum the stacks `python -m tests.bench --profile DIR` records (py-spy's raw format, one line per
stack: frames joined by `;`, the thread first, then the sample count), for docs/profiles.md.

    .venv/bin/python -m tests.profiles.stacks DIR/steady-empty-*.txt --top 40

Prints each thread's share of the samples and each function's inclusive share (a function
counted once per stack however often it recurs). The recorder samples only the thread holding
the GIL (spy.py), so a share is a share of the Python process's CPU, not of its wall time.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re
from collections.abc import Iterable

# `name (path/to/file.py:123)` -> `name (file.py)`: one key per function, not per line.
FRAME = re.compile(r"^(?P<name>.+?) \((?P<path>[^:()]+)(?::\d+)?\)$")


def function_of(frame: str) -> str:
    match = FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['name']} ({pathlib.PurePath(match['path']).name})"


def thread_of(frame: str) -> str:
    """`thread (123): deliver_4` -> `deliver`: a pool's threads summed as one."""
    name = frame.split(": ", 1)[-1]
    return re.sub(r"[_-]\d+(_\d+)?$", "", name)


def summarise(
    lines: Iterable[str],
) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    total = 0
    threads: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[thread_of(frames[0])] += count
        for function in {function_of(frame) for frame in frames[1:]}:
            functions[function] += count
    return total, threads, functions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=pathlib.Path)
    parser.add_argument("--top", type=int, default=40, help="functions to list")
    args = parser.parse_args()
    lines = [line for path in args.files for line in path.read_text().splitlines()]
    total, threads, functions = summarise(lines)
    print(f"{total} samples")
    print("\nthread share")
    for name, count in threads.most_common():
        print(f"{count / total:6.1%}  {name}")
    print("\ninclusive share by function")
    for name, count in functions.most_common(args.top):
        print(f"{count / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
