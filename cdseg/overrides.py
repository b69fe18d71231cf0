"""Command-line overrides checked before Hydra runs: a key that does not exist is named with the
nearest valid ones, instead of Hydra's advice to append it with ``+`` (which then fails inside a
constructor)."""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from cdseg.config import flatten
from cdseg.errors import ConfigError

# Config choices that need an optional extra: (group, option or None for any) -> (a module the
# extra provides, the extra).
EXTRAS = {
    ("hparams_search", None): ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
}


def check_extras(args: Sequence[str]) -> None:
    """Raise :class:`ConfigError` naming the ``pip install`` for a chosen group whose extra is missing
    (Hydra would say only that a config it cannot see is missing)."""
    for arg in args:
        key, _, value = arg.lstrip("+").partition("=")
        need = EXTRAS.get((key, value)) or EXTRAS.get((key, None))
        if need and value not in ("", "null"):
            module, extra = need
            if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
                raise ConfigError(f'{key}={value} needs the {extra} extra: pip install "cdseg[{extra}]"')


def exit_on_unknown_keys(config_dir: str | Path, config_name: str) -> None:
    """:func:`check_extras` and :func:`check_overrides` on ``sys.argv``: print the problems and exit 1
    when there are any."""
    try:
        check_extras(sys.argv[1:])
        check_overrides(config_dir, config_name, sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def check_overrides(config_dir: str | Path, config_name: str, args: Sequence[str]) -> None:
    """Raise :class:`ConfigError` for each ``key=value`` whose key the composed config lacks.

    ``args`` is the command line after the script name. Group choices (``model=tiny``, the first of a
    sweep) are composed first, so ``model.<key>`` is checked against the chosen model. Appends and
    deletions (``+key``, ``++key``, ``~key``), Hydra's own keys and anything Hydra itself cannot
    parse or compose are left for Hydra to report.
    """
    config_dir = Path(config_dir).resolve()
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except Exception:  # Hydra reports its own syntax errors, but for a home folder's ~, which it cannot read
        home = [a for a in args if "=~" in a]
        if home:
            key, value = home[0].split("=", 1)
            raise ConfigError(
                f"{home[0]}: the shell leaves a ~ after = as it is, and Hydra cannot read it: "
                f"write {key}=$HOME{value[1:]} (or \"{key}='{value}'\")"
            ) from None
        return
    groups = [o for o in overrides if _is_group(o, config_dir)]
    for o in groups:  # Hydra's own answer is a traceback ending in "must be a string or a list"
        if o.type == OverrideType.CHANGE and not o.is_sweep_override() and o.value() is None:
            options = sorted(p.stem for p in (config_dir / o.key_or_group).glob("*.yaml"))
            raise ConfigError(
                f"{o.key_or_group}=null: a group takes one of its options ({', '.join(options)}); "
                f"to leave the group out, write ~{o.key_or_group}"
            )
    keys = [o for o in overrides if o not in groups and o.type == OverrideType.CHANGE and not _is_hydra(o)]
    if not keys:
        return
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=[_first_choice(o) for o in groups])
    except Exception:  # a wrong group choice: Hydra lists the valid ones
        return
    problems = [_unknown(cfg, o.key_or_group) for o in keys]
    found = [p for p in problems if p]
    if found:
        raise ConfigError("\n".join(found))


def _is_group(o: Override, config_dir: Path) -> bool:
    return (config_dir / o.key_or_group).is_dir() or o.key_or_group.startswith("hydra/")


def _is_hydra(o: Override) -> bool:
    return o.key_or_group == "hydra" or o.key_or_group.startswith("hydra.")


def _first_choice(o: Override) -> str:
    value = next(iter(o.sweep_string_iterator())) if o.is_sweep_override() else o.get_value_element_as_str()
    return f"{o.get_key_element()}={value}"


def _unknown(cfg: DictConfig, key: str) -> str | None:
    """What is wrong with ``key`` (None when it exists): the nearest full keys and the options of
    the deepest existing parent."""
    tree = OmegaConf.to_container(cfg, resolve=False)  # interpolations stay text: nothing is resolved
    node, parts = tree, key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict):
            return None  # inside a list or a value: Hydra and the constructors check it
        if part not in node:
            parent = ".".join(parts[:depth])
            # train.py sets the Trainer's loggers, callbacks and plugins itself, from their own groups
            settable = depth == len(parts) - 1 and parts[-1] not in ("logger", "callbacks", "plugins")
            target = _target_taking(node, part) if settable else None
            if target:  # a constructor argument the config leaves at its default (Hydra adds it with +)
                return f"{key}: not in the config, but {target} takes it: add it with +{key}=..."
            keys = [k for k in flatten(tree) if "._" not in f".{k}"]  # not _target_ and the like
            near = difflib.get_close_matches(key, keys, n=2, cutoff=0.75)
            # The same option under another parent: predict.py's runs_dir for train.py's paths.runs_dir
            near = near or [k for k in keys if k.rsplit(".", 1)[-1] == parts[-1]][:2]
            hint = f"; did you mean {' or '.join(near)}?" if near else ""
            options = ", ".join(sorted(str(k) for k in node if not str(k).startswith("_")))
            scope = f"the options of {parent}" if parent else "the top-level keys"
            if parent and "_target_" in node:
                scope += f" ({str(node['_target_']).rsplit('.', 1)[-1]})"
            return f"{key}: no such option{hint} ({scope}: {options})"
        node = node[part]
    return None


def _target_taking(node: dict, name: str) -> str | None:
    """The name of ``node``'s ``_target_`` when it has a parameter ``name``."""
    if "_target_" not in node:
        return None
    try:
        target = get_object(str(node["_target_"]))
        takes = name in inspect.signature(target).parameters
    except Exception:  # not importable, or no signature to read
        return None
    return str(node["_target_"]) if takes else None
