"""The one base of every error a user can fix: the command line prints its message and exits 1."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class CdsegError(Exception):
    """A problem with the user's input (option, file, checkpoint, data), told in one message that
    names the key or file and what was expected. ``train.py`` and ``predict.py`` catch this one type."""


class ConfigError(CdsegError, ValueError):
    """A configuration that cannot run as composed."""


@contextmanager
def exit_1_on_error() -> Iterator[None]:
    """A command's body: a :class:`CdsegError` becomes one ``error: ...`` line and exit status 1,
    with no traceback; anything else is a bug and keeps its traceback."""
    try:
        yield
    except CdsegError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
