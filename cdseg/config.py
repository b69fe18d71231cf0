"""Reading the composed config: required values, building its objects with one error type, flat views."""

from __future__ import annotations

import inspect
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from cdseg.errors import CdsegError, ConfigError

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def require_values(cfg: DictConfig) -> None:
    """Refuse a config with ``???`` values left, naming them."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"missing required value(s): {', '.join(missing)}; set them on the command line, e.g. {missing[0]}=..."
        )


def build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, with a constructor's refusal reported as a :class:`ConfigError`
    (or the constructor's own :class:`CdsegError`) rather than a traceback through Hydra."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, CdsegError):
            raise e.__cause__ from None
        raise ConfigError(_options_hint(node, e)) from None


def _options_hint(node: Any, error: InstantiationException) -> str:
    """Hydra's message, plus the options the target takes when it was given one it does not."""
    message = str(error)
    if not (isinstance(error.__cause__, TypeError) and "unexpected keyword" in str(error.__cause__)):
        return message
    try:
        target = get_object(str(node["_target_"]))
        names = [p.name for p in inspect.signature(target).parameters.values() if p.kind not in _VARIADIC]
    except Exception:  # no signature to read: Hydra's message alone
        return message
    return f"{message}\n{target.__name__} takes: {', '.join(names)}"


def flatten(node: Any, sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a<sep>b": leaf}``; an empty dict is a leaf, so it is compared like a value."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, sep, f"{prefix}{k}{sep}"))
        return out
    return {prefix[: -len(sep)]: node}


def int_problem(key: str, value: Any, minimum: int = 1, optional: bool = False) -> str | None:
    """What is wrong with an integer option (None when nothing), naming its key; ``optional``: a
    positive integer or null."""
    if optional and value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return None
    expected = "a positive integer or null" if optional else f"an integer >= {minimum}"
    return f"{key} must be {expected}, got {value!r}"


def probability_problem(key: str, value: Any) -> str | None:
    """What is wrong with a probability option (None when nothing), naming its key."""
    if not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1:
        return None
    return f"{key} must be a probability in [0, 1], got {value!r}"


def raise_problems(problems: list[str | None]) -> None:
    """One :class:`ConfigError` listing every problem found, if any."""
    found = [p for p in problems if p]
    if found:
        raise ConfigError("; ".join(found))
