"""Building the network a ``model`` config describes, and running it as its runtime options say.

Every model config carries two options that change how the network runs, not what it computes
(conf/train.yaml sets them for all models):

* ``channels_last``: weights in NHWC memory format; convolutions then keep activations NHWC, which
  oneDNN on CPUs and tensor cores on GPUs run faster (about 1.5x for training and inference on an
  AVX-512 CPU, BENCHMARKS.md). Inputs need no conversion: a convolution follows its weight's format.
* ``compile``: ``torch.compile`` the network in place (its state_dict keys stay as they are): a
  slower start, faster steps where the compiler's kernels pay (GPUs, fixed input sizes).
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cdseg.config import bool_problem, build, int_problem, raise_problems

RUNTIME_OPTIONS = ("channels_last", "compile")


def split_runtime(node: Any) -> tuple[Any, dict[str, bool]]:
    """``(the constructor's node, {runtime option: value})``; an absent option is false."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    spec = {k: v for k, v in node.items() if k not in RUNTIME_OPTIONS}
    return spec, {k: node.get(k, False) for k in RUNTIME_OPTIONS}


def runtime_problems(node: Any) -> list[str]:
    """The runtime options that are not true or false, and a width that is not positive, named (a
    width of 0 would otherwise fail inside the first convolution)."""
    spec, runtime = split_runtime(node)
    problems = [bool_problem(f"model.{k}", v) for k, v in runtime.items()]
    problems += [int_problem("model.base", spec["base"])] if spec.get("base") is not None else []
    return [p for p in problems if p]


def build_network(node: Any, compile: bool | None = None, **kwargs: Any) -> nn.Module:
    """The ``nn.Module`` of a model config (``kwargs`` go to its constructor), in its memory format,
    compiled if asked (``compile`` overrides the config's choice, e.g. False for prediction)."""
    raise_problems(runtime_problems(node))
    spec, runtime = split_runtime(node)
    net = build(spec, **kwargs)
    if runtime["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    if runtime["compile"] if compile is None else compile:
        # Static shapes: each input size (training crops, whole validation tiles, a last smaller
        # batch) compiles once. Left to itself, torch turns dynamic at the second size, and
        # torch 2.14.1's inductor then fails on these networks (TensorReferenceAnalysis.python_mod).
        net.compile(dynamic=False)
    return net
