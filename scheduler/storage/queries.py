"""Named-query files: each storage module's statements, read from the .sql file beside it."""

from __future__ import annotations

import importlib.resources
import re

_HEADER = re.compile(r"^-- (\w+) --$", re.MULTILINE)
# `{name}` in a query stands for the query `name` of the same file (a shared part, such as what
# a claim sets); a name no query has is left for the module to fill in (a variant it chooses).
_PART = re.compile(r"\{(\w+)\}")


def parse_queries(text: str) -> dict[str, str]:
    """Split a named-query file into {name: sql}, dropping each query's description comment."""
    parts = _HEADER.split(text)
    queries = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return {name: _resolve(text, queries, (name,)) for name, text in queries.items()}


def _resolve(text: str, queries: dict[str, str], seen: tuple[str, ...]) -> str:
    def part(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in queries:
            return match.group(0)
        if name in seen:
            raise ValueError(f"query {seen[0]} includes itself through {name}")
        return _resolve(queries[name], queries, (*seen, name))

    return _PART.sub(part, text)


def load(module: str) -> dict[str, str]:
    """The queries of storage module `module` (its __name__): the .sql file of the same name."""
    package, _, name = module.rpartition(".")
    text = importlib.resources.files(package).joinpath(f"{name}.sql").read_text("utf-8")
    return parse_queries(text)


def variant(query: str, **parts: str) -> str:
    """A query with the parts its module chooses filled in (literal SQL, never a value)."""
    return _PART.sub(lambda match: parts[match.group(1)], query)
