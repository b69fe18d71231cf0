"""The run's log file receives what its console shows: prints, warnings and Lightning's messages."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BAR_AT_ZERO = re.compile(r"(\|\s*0/\?|\s0%\|)")  # a progress bar drawn before its first step


def _loggable(line: str) -> str:
    """The last state of a line redrawn with carriage returns, without terminal escapes; '' to drop."""
    line = _ANSI.sub("", line.rsplit("\r", 1)[-1])
    return "" if _BAR_AT_ZERO.search(line) else line


class _Tee:
    """A text stream that writes through to ``console`` and appends whole lines to ``log``.

    Progress bars redraw a line with carriage returns; the log keeps only the last state of such a
    line, so it reads as a log rather than as thousands of bar updates.
    """

    def __init__(self, console: IO[str], log: IO[str]) -> None:
        self.console, self.log, self.pending = console, log, ""

    def write(self, text: str) -> int:
        self.console.write(text)
        self.pending += text
        if "\n" in self.pending:
            *lines, self.pending = self.pending.split("\n")
            self.log.write("".join(f"{kept}\n" for kept in map(_loggable, lines) if kept.strip()))
            self.log.flush()
        return len(text)

    def flush(self) -> None:
        self.console.flush()
        self.log.flush()

    def close_line(self) -> None:
        last = _loggable(self.pending)
        if last.strip():
            self.log.write(last + "\n")
        self.pending = ""

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ... of the console
        return getattr(self.console, name)


@contextmanager
def tee_console(log_file: str | Path) -> Iterator[None]:
    """While inside, append everything written to stdout and stderr to ``log_file`` as well, and
    point Lightning's console handlers (created at import, holding the original streams) at it."""
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log:
        out, err = sys.stdout, sys.stderr
        tees = {id(out): _Tee(out, log), id(err): _Tee(err, log)}
        moved: list[tuple[logging.StreamHandler, IO[str]]] = []
        for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
            for handler in logging.getLogger(name).handlers:
                stream = getattr(handler, "stream", None)
                if isinstance(handler, logging.StreamHandler) and id(stream) in tees:
                    moved.append((handler, stream))
                    handler.setStream(tees[id(stream)])
        sys.stdout, sys.stderr = tees[id(out)], tees[id(err)]
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err
            for handler, stream in moved:
                handler.setStream(stream)
            for tee in tees.values():
                tee.close_line()
