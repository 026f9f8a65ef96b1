"""Structured logging for `ledger`: JSON lines for machines, one short line per problem for people.

Why it is built this way:

* Every line of the log file is one JSON object with a stable `event` key and flat fields
  (`run`, `batch_id`, `row_id`, `step`, `entity_key`, `http_status`, `tracking_id`, ...), so an
  operator can grep it, load it into a table, or hand a Webex `tracking_id` to Cisco support.
  Fields are passed with `extra={...}`; any extra key is written, known ones first.
* `bind_log_context()` attaches fields (a row, a step) to every line logged while it is active in
  the current thread or task, so the client's retry lines say which row they belong to without
  passing ids through every call.
* A run against an expired token or a struggling API repeats the same error thousands of times.
  After `repeat_limit` identical lines (same event, reason or status, and message) within
  `repeat_window_s`, further ones are only counted, and one summary line ("... repeated N times")
  replaces them when the window closes or logging shuts down.
* The process holds a bearer token. Every line, whoever wrote it, passes through `redact()`,
  which masks `Bearer ...` and every value given to `register_secret()`.

Handlers take their own lock around emitting, so any number of threads may log at once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from ledger.error_handling import ConfigError
from ledger.records import iso

LOGGER_NAME = "ledger"

# Written in this order, before any other extra field.
KNOWN_FIELDS = (
    "run",
    "batch_id",
    "row_id",
    "step",
    "entity_key",
    "http_status",
    "error_code",
    "tracking_id",
    "method",
    "path",
    "attempt",
    "wait_s",
)

REDACTED = "[REDACTED]"
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
_SECRET_MIN_LENGTH = 8  # shorter values would mask ordinary words
_secrets: set[str] = set()
_secrets_lock = threading.Lock()

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

_EMPTY_CONTEXT: Mapping[str, object] = MappingProxyType({})
_context: ContextVar[Mapping[str, object]] = ContextVar(
    "ledger_log_context", default=_EMPTY_CONTEXT
)

_installed: list[logging.Handler] = []
_installed_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Mask `value` wherever it would appear in a log line, even without a `Bearer` prefix."""
    if len(value) >= _SECRET_MIN_LENGTH:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Mask bearer tokens and registered secrets; the last line of defence for the token."""
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    with _secrets_lock:
        secrets = tuple(_secrets)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


class bind_log_context:  # used as a function: `with bind_log_context(**fields):`
    """Add `fields` to every line logged in this thread (or task) until the block ends.

    A class rather than a generator context manager: a row enters about a dozen, and this
    costs half as much CPU each."""

    __slots__ = ("_fields", "_token")
    _token: Token[Mapping[str, object]]

    def __init__(self, **fields: object) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        self._token = _context.set(MappingProxyType({**_context.get(), **self._fields}))

    def __exit__(self, *_exc: object) -> None:
        _context.reset(self._token)


class _ContextFilter(logging.Filter):
    """Copies the bound context onto the record in the logging thread, before any queueing."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if name not in record.__dict__:
                record.__dict__[name] = value
        return True


def _iso_utc(created: float) -> str:
    return iso(datetime.fromtimestamp(created, tz=UTC), timespec="milliseconds")


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return iso(value)
    return str(value)


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: `ts`, `level`, `event`, `message`, then the fields."""

    def __init__(self, *, run_id: int | None = None) -> None:
        super().__init__()
        self._run_id = run_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname.lower(),
            "event": record.__dict__.get("event") or "log",
            "message": record.getMessage(),
        }
        extras = {
            name: value
            for name, value in record.__dict__.items()
            if name not in _RECORD_ATTRIBUTES and name != "event" and not name.startswith("_")
        }
        if self._run_id is not None and extras.get("run") is None:
            extras["run"] = self._run_id
        for name in KNOWN_FIELDS:
            value = extras.pop(name, None)
            if value is not None:
                entry[name] = value
        for name in sorted(extras):
            entry[name] = extras[name]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # ASCII-only output: a name with U+2028 in it must not split a JSON line for any reader.
        return redact(json.dumps(entry, ensure_ascii=True, default=_json_default))


class ConsoleFormatter(logging.Formatter):
    """The terminal line: level and message, with the token masked like everywhere else."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(f"ledger: {record.levelname.lower()}: {record.getMessage()}")


@dataclass
class _RepeatWindow:
    started: float
    seen: int = 1
    suppressed: int = 0
    last: logging.LogRecord | None = None


class RepeatSuppressor:
    """Decides which records are written. Not locked itself: its handler's lock guards it."""

    def __init__(
        self,
        *,
        limit: int = 5,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        if limit < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("repeat limit, window and key bound must be positive")
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._windows: dict[tuple[object, object, str], _RepeatWindow] = {}
        self._next_sweep = 0.0

    def admit(self, record: logging.LogRecord) -> list[logging.LogRecord]:
        """The records to write now, in order: summaries that fell due, then maybe `record`."""
        now = self._clock()
        due = self._sweep(now)
        if record.levelno < logging.WARNING:
            # Progress lines (batch start and end) are each worth keeping; only problems repeat.
            due.append(record)
            return due
        key = _repeat_key(record)
        window = self._windows.get(key)
        if window is not None and now - window.started >= self._window_s:
            due.extend(self._close(key, now))
            window = None
        if window is None:
            if len(self._windows) >= self._max_keys:
                due.extend(self._close(next(iter(self._windows)), now))
            self._windows[key] = _RepeatWindow(started=now)
            due.append(record)
            return due
        window.seen += 1
        if window.seen <= self._limit:
            due.append(record)
        else:
            window.suppressed += 1
            window.last = record
        return due

    def drain(self) -> list[logging.LogRecord]:
        """Summaries of every open window, for shutdown: no count is ever lost silently."""
        now = self._clock()
        summaries: list[logging.LogRecord] = []
        for key in list(self._windows):
            summaries.extend(self._close(key, now))
        return summaries

    def _sweep(self, now: float) -> list[logging.LogRecord]:
        # Sweeping every window on every record would cost O(keys) per line; a tenth of a
        # window is soon enough for a summary.
        if now < self._next_sweep:
            return []
        self._next_sweep = now + self._window_s / 10
        due: list[logging.LogRecord] = []
        for key, window in list(self._windows.items()):
            if now - window.started >= self._window_s:
                due.extend(self._close(key, now))
        return due

    def _close(self, key: tuple[object, object, str], now: float) -> list[logging.LogRecord]:
        window = self._windows.pop(key)
        if window.last is None or window.suppressed == 0:
            return []
        return [_summary(window.last, window.suppressed, now - window.started)]


def _repeat_key(record: logging.LogRecord) -> tuple[object, object, str]:
    fields = record.__dict__
    reason = fields.get("reason_code") or fields.get("reason") or fields.get("http_status")
    return (fields.get("event"), reason, record.getMessage())


def _summary(last: logging.LogRecord, suppressed: int, span_s: float) -> logging.LogRecord:
    summary = logging.makeLogRecord(dict(last.__dict__))
    summary.msg = f"{last.getMessage()} … repeated {suppressed} times in {span_s:.0f} s"
    summary.args = None
    summary.exc_info = None
    summary.exc_text = None
    summary.stack_info = None
    summary.created = time.time()
    summary.__dict__["repeated"] = suppressed
    return summary


class RepeatSuppressingHandler(logging.Handler):
    """Wraps a handler: binds the log context, drops repeats, writes their summaries."""

    def __init__(self, target: logging.Handler, suppressor: RepeatSuppressor) -> None:
        super().__init__(target.level)
        self._target = target
        self._suppressor = suppressor
        self.addFilter(_ContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            admitted = self._suppressor.admit(record)
        except Exception:
            self.handleError(record)
            return
        for item in admitted:
            self._target.handle(item)

    def flush(self) -> None:
        self._target.flush()

    def close(self) -> None:
        self.acquire()
        try:
            for summary in self._suppressor.drain():
                self._target.handle(summary)
        finally:
            self.release()
        self._target.close()
        super().close()


def configure_logging(
    log_file: Path,
    *,
    run_id: int | None = None,
    console_level: int | None = logging.WARNING,
    file_level: int = logging.INFO,
    repeat_limit: int = 5,
    repeat_window_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Send the `ledger` logger to `log_file` (JSON lines) and stderr; replaces an earlier setup."""
    shutdown_logging()
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # Created readable by its owner only: log lines name people, emails and numbers.
        os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"LEDGER_LOG_FILE {log_file} cannot be opened: {exc.strerror or exc}"
        ) from None
    file_handler.setLevel(file_level)
    file_handler.setFormatter(JsonLinesFormatter(run_id=run_id))
    handlers: list[logging.Handler] = [
        RepeatSuppressingHandler(
            file_handler,
            RepeatSuppressor(limit=repeat_limit, window_s=repeat_window_s, clock=clock),
        )
    ]
    if console_level is not None:
        console_handler = logging.StreamHandler(sys.stderr)
        console_handler.setLevel(console_level)
        console_handler.setFormatter(ConsoleFormatter())
        handlers.append(
            RepeatSuppressingHandler(
                console_handler,
                RepeatSuppressor(limit=repeat_limit, window_s=repeat_window_s, clock=clock),
            )
        )
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(min(handler.level for handler in handlers))
    with _installed_lock:
        for handler in handlers:
            logger.addHandler(handler)
            _installed.append(handler)


def shutdown_logging() -> None:
    """Write pending repeat summaries, close the handlers `configure_logging` installed."""
    logger = logging.getLogger(LOGGER_NAME)
    with _installed_lock:
        handlers = list(_installed)
        _installed.clear()
    for handler in handlers:
        logger.removeHandler(handler)
        handler.close()
