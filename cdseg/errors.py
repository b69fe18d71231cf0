"""The one base of every error a user can fix: the command line prints its message and exits 1."""

from __future__ import annotations


class CdsegError(Exception):
    """A problem with the user's input (option, file, checkpoint, data), told in one message that
    names the key or file and what was expected. ``train.py`` and ``predict.py`` catch this one type."""


class ConfigError(CdsegError, ValueError):
    """A configuration that cannot run as composed."""
