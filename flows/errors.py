"""The one error path of the ``stego`` command line: every command fails the same way.

* An expected failure (a bad file, value or filter, an unknown run, a server that does not
  answer, a full disk) prints ``error: <one line>`` naming the file, field or URL and what to do,
  and exits 2.
* Anything else is a bug: it prints a one-line summary and the path of a log file holding the full
  traceback (``$STEGO_HOME/logs/stego-<time>-<pid>.log``), and exits 1.
* ``stego --debug ...`` (or ``STEGO_DEBUG=1``) prints the traceback as well.

Tracebacks that libraries log on the way (Prefect logs a failing task's traceback before the
exception reaches the command) are moved into the same log file by :func:`divert_logged_tracebacks`.

What is expected: the exception types below, and a ``RuntimeError`` raised by this project's own
code (its messages are written for the user: an unreachable model hub, a server that would not
start). ``ValueError`` covers ``DataError``, ``ConfigError`` and pydantic's ``ValidationError``.
"""
from __future__ import annotations

import datetime as _dt
import errno
import logging
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path

EXPECTED: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError,
    ConnectionError, TimeoutError,
)
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's tofile/save on a full disk: no errno
OWN_PACKAGES = tuple(str(Path(__file__).resolve().parents[1] / name) + os.sep for name in ("flows", "tasks", "stego_core"))
DEBUG_ENV = "STEGO_DEBUG"
MAX_LINE = 600  # characters of a message shown on the terminal; the rest is in the log


def raised_by_project(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc``'s traceback is in this project's code (a deliberate
    ``raise`` with a message for the user, not an error from deep inside a library)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(OWN_PACKAGES)


def expected_message(exc: BaseException) -> str | None:
    """The message of an expected failure, ``None`` for an unexpected one (a bug)."""
    if isinstance(exc, OSError) and (exc.errno in DISK_FULL or SHORT_WRITE.fullmatch(str(exc))):
        where = f" writing {exc.filename}" if exc.filename else ""
        return (f"no space left on the device{where} ({exc}); free space there, or point "
                "--artifact-root / $STEGO_HOME at a larger disk, and rerun (finished stages are reused)")
    if isinstance(exc, EXPECTED) or (isinstance(exc, RuntimeError) and raised_by_project(exc)):
        text = str(exc).strip()
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
            text = f"{text}: {exc.filename}"
        return text or type(exc).__name__
    return None


def log_folder() -> Path:
    from stego_core.home import stego_home

    return stego_home() / "logs"


def write_log(exc: BaseException, argv: list[str], extra: str = "") -> Path | None:
    """Write the command line and ``exc``'s full traceback to a new log file; its path (``None``
    when neither ``$STEGO_HOME/logs`` nor the temp folder can be written)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    body = (f"command: {' '.join(argv)}\ntime: {stamp}\npython: {sys.version.split()[0]}\n\n{extra}"
            + "".join(traceback.format_exception(exc)))
    for folder in (log_folder(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"stego-{stamp}-{os.getpid()}.log"
            with open(path, "a", encoding="utf-8") as f:
                f.write(body)
            return path
        except OSError:
            continue
    return None


def one_line(text: str) -> tuple[str, bool]:
    """``text`` on one line (a line ending in ``:`` runs on into the next, others are joined by
    ``; ``), cut at MAX_LINE characters, and whether anything was cut."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    joined = ""
    for line in lines:
        joined += line if not joined else (" " if joined.endswith(":") else "; ") + line
    cut = len(joined) > MAX_LINE
    return (joined[:MAX_LINE] + " ..." if cut else joined), cut


def report(exc: BaseException, *, debug: bool, argv: list[str] | None = None) -> tuple[int, str]:
    """The exit status for ``exc`` and the one line to print (``debug``: the traceback before it)."""
    argv = list(sys.argv if argv is None else argv)
    message = expected_message(exc)
    shown = "".join(traceback.format_exception(exc)) if debug else ""
    if message is not None:
        line, cut = one_line(message)
        if cut:
            log = write_log(exc, argv, extra=f"message:\n{message}\n\n")
            line += f" (the whole message: {log})" if log else ""
        return 2, shown + f"error: {line}"
    log = write_log(exc, argv)
    summary, _ = one_line(str(exc))
    where = f"the full traceback is in {log}" if log else "the log could not be written"
    hint = "" if debug else "; rerun with `stego --debug ...` to print it"
    return 1, shown + (f"error: unexpected {type(exc).__name__}{': ' + summary if summary else ''} "
                       f"(a bug in stego or a library: {where}{hint})")


class _TracebackSink:
    """The session's log file for tracebacks that libraries log (created at the first one)."""

    def __init__(self, argv: list[str]) -> None:
        self.argv, self.path = argv, None

    def write(self, record: logging.LogRecord) -> Path | None:
        exc, note = record.exc_info[1], f"logged by {record.name}: {record.getMessage()}\n"
        if self.path is None:
            self.path = write_log(exc, self.argv, extra=note)
        else:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("\n" + note + "".join(traceback.format_exception(exc)))
        return self.path


class _OneLineFormatter(logging.Formatter):
    """Formats a record as its handler's formatter does, but sends the traceback to the sink and
    names the file instead (the record itself is left as it was, for the other handlers)."""

    def __init__(self, inner: logging.Formatter | None, sink: _TracebackSink) -> None:
        super().__init__()
        self.inner, self.sink = inner or logging.Formatter(), sink

    def format(self, record: logging.LogRecord) -> str:
        if not (record.exc_info and record.exc_info[1] is not None):
            return self.inner.format(record)
        path = self.sink.write(record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            text = self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved
        return f"{text} (traceback in {path})" if path else text


def divert_logged_tracebacks(argv: list[str] | None = None) -> None:
    """Make every terminal logging handler configured so far (Prefect's console handlers are made
    when Prefect is imported) write tracebacks to a log file and print one line naming it.
    A no-op under ``STEGO_DEBUG=1``."""
    if os.environ.get(DEBUG_ENV) == "1":
        return
    sink = _TracebackSink(list(sys.argv if argv is None else argv))
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for handler in lg.handlers:
            if _on_terminal(handler) and not isinstance(handler.formatter, _OneLineFormatter):
                handler.setFormatter(_OneLineFormatter(handler.formatter, sink))


def _on_terminal(handler: logging.Handler) -> bool:
    """A handler writing to this process's stdout/stderr (Prefect's console handler among them), not
    to a file or a buffer (a log capture keeps its tracebacks)."""
    if type(handler).__name__ == "PrefectConsoleHandler":
        return True
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) and \
        getattr(handler, "stream", None) in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
