"""The house rules of ARCHITECTURE.md: what each package may import."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCIENCE = ("cdseg.models", "cdseg.data", "cdseg.losses", "cdseg.metrics", "cdseg.module", "cdseg.callbacks")
SMALL = ("errors", "config", "precision", "atomic_write", "output_folder", "overrides", "scores")
# files (globs) -> import prefixes they must never use directly; for the prediction path Lightning is
# also checked transitively, below.
FORBIDDEN = {
    "cdseg/models/*.py": ("lightning", "hydra", "cdseg.data", "cdseg.runs", "cdseg.inference", "cdseg.module"),
    "cdseg/data/*.py": ("cdseg.runs", "cdseg.models", "cdseg.inference", "cdseg.module", "cdseg.callbacks"),
    "cdseg/inference/*.py": (
        "lightning",
        "cdseg.module",
        "cdseg.callbacks",
        "cdseg.runs.resume",
        "cdseg.runs.interrupt",
    ),
    # The scene path takes any predictor through its call API, whatever built it.
    "cdseg/inference/geo*.py": (
        "cdseg.inference.predictor",
        "cdseg.inference.checkpoint",
        "cdseg.models",
        "cdseg.data",
        "cdseg.runs",
    ),
    "cdseg/runs/*.py": (*SCIENCE, "cdseg.inference"),
    "cdseg/runs/folder.py": ("lightning",),
    "cdseg/runs/checkpoint.py": ("lightning",),
    **{
        f"cdseg/data/{name}.py": ("lightning",)
        for name in (
            "dataset",
            "transforms",
            "sampler",
            "synthetic",
            "check",
            "duplicates",
            "cache",
            "tile",
            "device_augment",
            "preprocess",
            "color",
        )
    },
    **{
        f"cdseg/{name}.py": ("cdseg.runs",)
        for name in ("losses", "metrics", "module", "callbacks", "baseline", "schedules")
    },
    **{f"cdseg/{name}.py": ("lightning", *SCIENCE, "cdseg.runs", "cdseg.inference") for name in SMALL},
}


def imported_modules(file: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("pattern", sorted(FORBIDDEN))
def test_packages_import_only_what_they_may(pattern: str) -> None:
    files = sorted(ROOT.glob(pattern))
    assert files
    found = [
        f"{file.relative_to(ROOT)} imports {name}"
        for file in files
        for name in sorted(imported_modules(file))
        if any(name == p or name.startswith(p + ".") for p in FORBIDDEN[pattern])
    ]
    assert not found, found


def test_every_data_module_is_ruled() -> None:
    ruled = {Path(p).name for p in FORBIDDEN if p.startswith("cdseg/data/") and not p.endswith("*.py")}
    assert {p.name for p in (ROOT / "cdseg" / "data").glob("*.py")} - ruled == {"__init__.py", "datamodule.py"}


def test_the_prediction_path_never_loads_lightning() -> None:
    # Every module of cdseg/inference, and predict.py, imported in a fresh interpreter.
    modules = [f"cdseg.inference.{p.stem}" for p in sorted((ROOT / "cdseg" / "inference").glob("*.py"))]
    code = f"import sys, predict, {', '.join(modules)}\n"
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", proc.stdout


def test_predicting_with_a_model_that_needs_no_torchvision_never_imports_it(
    trained_run: dict, tiny_data: Path, tmp_path: Path
) -> None:
    # Importing torchvision (and the torch._dynamo its ops pull in) costs about 1.3 s of a one-pair call.
    overrides = [f"ckpt_path={trained_run['best_checkpoint']}", f"input={tiny_data / 'test'}", f"output={tmp_path}"]
    code = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "from predict import predict\n"
        f"with initialize_config_dir(config_dir={str(ROOT / 'conf')!r}, version_base='1.3'):\n"
        f"    cfg = compose('predict', overrides={overrides!r})\n"
        "predict(cfg)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torchvision', 'torchmetrics', 'lightning'}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
