"""Reading the composed config: required values, building its objects with one error type, flat views."""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Sequence
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
    """Hydra's message, plus the options the target takes when it was given one it does not, or
    the import error behind a target it could not locate (which Hydra leaves to HYDRA_FULL_ERROR)."""
    message = str(error)
    if "HYDRA_FULL_ERROR" in message:
        cause = error.__cause__
        while cause is not None and cause.__cause__ is not None:  # the first error: a missing module, a typo
            cause = cause.__cause__
        # Hydra's message names the target that failed (perhaps a nested one) and, below, its key
        located = re.search(r"Error locating target '([^']+)'", message)
        key = re.search(r"full_key: (\S+)", message)
        target = (f"'{located.group(1)}'" if located else "the target") + (f" (at {key.group(1)})" if key else "")
        name = located.group(1) if located else ""
        if isinstance(cause, ModuleNotFoundError) and cause.name == name and "." in name:
            module, attribute = name.rsplit(".", 1)  # the module imports; the name is not in it
            return f"cannot import {target}: {module} has no {attribute!r}"
        return f"cannot import {target}" + (f": {type(cause).__name__}: {cause}" if cause else "")
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


SEED_MAX = 2**32 - 1  # Lightning's seed_everything refuses larger seeds


def int_problem(
    key: str, value: Any, minimum: int = 1, optional: bool = False, maximum: int | None = None
) -> str | None:
    """What is wrong with an integer option (None when nothing), naming its key; ``optional``: a
    positive integer or null."""
    if optional and value is None:
        return None
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= minimum
        and (maximum is None or value <= maximum)
    ):
        return None
    if optional:
        expected = "a positive integer or null"
    else:
        expected = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    return f"{key} must be {expected}, got {value!r}"


def bool_problem(key: str, value: Any) -> str | None:
    """What is wrong with a true/false option (None when nothing), naming its key."""
    return None if isinstance(value, bool) else f"{key} must be true or false, got {value!r}"


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


def threshold_problem(value: Any, optional: bool = False) -> str | None:
    """What is wrong with a decision threshold (None when nothing): a number strictly inside (0, 1),
    for train.py's ``threshold`` and predict.py's (``optional``: null too, the model's own)."""
    if (optional and value is None) or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1
    ):
        return None
    return f"threshold must be a number in (0, 1){' or null' if optional else ''}, got {value!r}"


def run_problems(cfg: DictConfig, scores: Sequence[str]) -> list[str | None]:
    """What is wrong with train.yaml's own options, and with combinations that would fail only after
    an epoch or train wrongly without a word. ``scores``: the metrics validation logs (``F1``, ...)."""
    metric, mode = cfg.get("optimized_metric"), cfg.get("optimized_mode")
    allowed = ["val/loss", *(f"val/{s}" for s in scores)]
    problems = [
        None
        if metric in allowed
        else f"optimized_metric must be one of {allowed} (what validation logs), got {metric!r}",
        None if mode in ("max", "min") else f"optimized_mode must be max or min, got {mode!r}",
        None
        if metric not in allowed or mode not in ("max", "min") or (mode == "min") == (metric == "val/loss")
        else f"optimized_mode={mode} would keep the worst checkpoint: {metric} is "
        + ("a loss, set optimized_mode=min" if metric == "val/loss" else "a score, set optimized_mode=max"),
        int_problem(
            "seed", cfg.get("seed"), 0, maximum=SEED_MAX
        ),  # every run is seeded: that is what makes it repeatable and resumable
        threshold_problem(cfg.get("threshold")),
        *(bool_problem(key, cfg.get(key, False)) for key in ("calibrate", "test", "resume_strict", "extend_schedule")),
    ]
    channels = (cfg.get("model") or {}).get("in_channels", 3)
    if channels != 3:  # cdseg.data reads every date as 8-bit RGB
        problems.append(
            f"model.in_channels must be 3: training reads every image as three bands (RGB), got {channels!r}"
        )
    scheduler, trainer = cfg.get("scheduler") or {}, cfg.get("trainer") or {}
    if str(scheduler.get("_target_", "")).endswith("CosineAnnealingLR"):
        t_max = scheduler.get("T_max")
        if not (isinstance(t_max, int) and not isinstance(t_max, bool) and t_max >= 1):
            hint = (
                "; the run's length is set in steps (trainer.max_epochs=-1): use scheduler=warmup_cosine"
                if trainer.get("max_epochs") in (-1, None)
                else ""
            )
            problems.append(f"scheduler.T_max (epochs of the cosine) must be an integer >= 1, got {t_max!r}{hint}")
    # Validating by steps, Lightning counts training batches: max_steps optimizer steps are
    # max_steps x accumulate_grad_batches of them.
    interval, steps = trainer.get("val_check_interval"), trainer.get("max_steps", -1)
    accumulate = trainer.get("accumulate_grad_batches", 1)
    numbers = all(isinstance(v, int) and not isinstance(v, bool) for v in (interval, steps, accumulate))
    if numbers and interval > 0 and accumulate > 1 and interval % accumulate:
        problems.append(
            f"trainer.val_check_interval={interval} is not a multiple of trainer.accumulate_grad_batches={accumulate}: "
            "validation, and the checkpoint it writes, would fall inside an optimizer step, whose gradients no "
            "checkpoint holds, so a resume from it would not continue the run exactly"
        )
    if trainer.get("check_val_every_n_epoch", 1) is None and numbers and interval > 0 and steps > 0:
        left = steps * accumulate % interval
        if left:
            problems.append(
                f"trainer.max_steps={steps} (x accumulate_grad_batches={accumulate}: {steps * accumulate} batches) "
                f"does not end on a validation (trainer.val_check_interval={interval} batches): its last {left} "
                "batches would be neither validated nor checkpointed, and a resume would train them again"
            )
    return problems


def check_types(cfg: DictConfig) -> None:
    """:func:`type_problems` for every built object of a training config, raised at once, before any work."""
    nodes = [(k, cfg.get(k)) for k in ("trainer", "model", "optimizer", "scheduler", "loss")]  # data checks its own
    for group in ("callbacks", "logger"):
        nodes += [(f"{group}.{name}", node) for name, node in (cfg.get(group) or {}).items()]
    raise_problems([p for key, node in nodes for p in type_problems(node, key)])


def type_problems(node: Any, key: str) -> list[str]:
    """What is wrongly typed among the options of a ``_target_`` node, checked against the target's
    annotations, each problem naming ``<key>.<option>``. Only what the annotations can decide is
    checked (numbers, strings, booleans, None, literals and unions of them); anything else passes."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return []
    try:
        target = get_object(str(node["_target_"]))
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # no readable annotations: the constructor checks its own options
        return []
    problems = []
    for name, hint in hints.items():
        if name not in node or name == "return":
            continue
        try:
            value = node[name]
        except Exception:  # an interpolation that resolves only later (e.g. Hydra's run folder)
            continue
        if not _fits(value, hint):
            problems.append(f"{key}.{name} must be {_describe(hint)}, got {value!r}")
    return problems


_SCALARS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args and not (isinstance(value, bool) and True not in args and False not in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (str, type(None)):
        return isinstance(value, hint)
    if hint in (typing.Any, object):
        return True
    scalar = isinstance(value, (bool, int, float, str))
    if origin is not None:  # list[int], Iterable[Logger], ...: never a scalar
        return not scalar
    return isinstance(value, hint) or not scalar if inspect.isclass(hint) else True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        literals = [v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
        rest = [_describe(a) for a in args if typing.get_origin(a) is not typing.Literal]
        if literals:
            rest.insert(0, _describe(typing.Literal[tuple(literals)]))
        return " or ".join(dict.fromkeys(rest))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    return _SCALARS.get(hint, getattr(hint, "__name__", str(hint)))


def comparable_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings a person compares runs by, flat (``model/base``, ``optimizer/lr``, ...), for
    TensorBoard's hparams table; ``config.yaml`` keeps the rest. Values other than numbers,
    strings and booleans are written as text."""
    c = OmegaConf.to_container(cfg, resolve=True)

    def name(node: Any) -> str:
        return str(node.get("_target_", "-")).rsplit(".", 1)[-1] if isinstance(node, dict) else "none"

    def options(group: str, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
        node = c.get(group) or {}
        chosen = keys if keys is not None else tuple(k for k in node if not str(k).startswith("_"))
        return {f"{group}/{k}": node.get(k) for k in chosen if k in node}

    out: dict[str, Any] = {"model": name(c.get("model")), **options("model")}
    out |= options(
        "data", ("root", "batch_size", "crop_size", "resize", "hflip", "vflip", "rot90", "swap", "color_jitter")
    )
    out |= {"optimizer": name(c.get("optimizer")), **options("optimizer", ("lr", "weight_decay"))}
    out |= {"scheduler": name(c.get("scheduler")), **options("scheduler", ("warmup_steps", "T_max", "eta_min"))}
    out |= options("loss")
    trainer_keys = ("max_epochs", "max_steps", "precision", "accumulate_grad_batches", "devices", "num_nodes")
    out |= {**options("trainer", trainer_keys), "seed": c.get("seed"), "threshold": c.get("threshold")}
    out |= {"name": c.get("name") or "", "tags": ",".join(c.get("tags") or [])}
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in out.items()}
