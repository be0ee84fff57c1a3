"""The public surface the docs teach: every documented name imports, the package's top
level holds only public modules and packages and private ``_`` packages, imports run one
way (record format, writer, public modules, serving, entry points), and the old internal
modules the docs once named still import, warning once."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import tb_convfilters

# module -> names the README and docs/ use
PUBLIC = {
    "tb_convfilters": ["Writer", "WriterError", "ReceptiveField", "PLUGIN_NAME", "__version__"],
    "tb_convfilters.summary": [
        "kernel",
        "activation",
        "patterns",
        "kernel_pb",
        "activation_pb",
        "patterns_pb",
    ],
    "tb_convfilters.reader": ["list", "entries", "read", "examples", "NotFoundError", "Entry"],
    "tb_convfilters.keras": ["FiltersCallback", "receptive_field"],
    "tb_convfilters.torch": [
        "log_kernels",
        "log_activations",
        "log_sample_activations",
        "flush",
        "to_numpy",
        "receptive_field",
    ],
    "tb_convfilters.lightning": ["FiltersCallback"],
    "tb_convfilters.transformers": ["FiltersCallback"],
    "tb_convfilters.fastai": ["FiltersCallback"],
    "tb_convfilters.ultralytics": ["add_filters"],
    "tb_convfilters.flax": ["log_params"],
    "tb_convfilters.vis": ["filter_patterns", "projections", "log_patterns", "METHODS"],
    "tb_convfilters.plot": [
        "grid", "image", "grid_from_logs", "examples", "example_pixels", "animate", "spectra",
    ],
    "tb_convfilters.doctor": ["diagnose", "Thresholds", "Finding", "PROBLEMS"],
    "tb_convfilters.dynamics": ["update_ratios", "rotation", "grad_norms", "read", "Dynamics"],
    "tb_convfilters.compare": ["align", "match_filters", "cka", "similarity", "Match"],
    "tb_convfilters.spectra": ["dominant", "power", "coverage", "over_steps", "frequencies"],
    "tb_convfilters.plugin": ["ConvFiltersLoader", "ConvFiltersPlugin"],
    "tb_convfilters.importing": [
        "import_models", "ImportFailure", "ImportSummary", "ImportedRun", "ImportedCheckpoint",
    ],
    "tb_convfilters.cli": ["main"],
}
# public modules over a framework that CI may lack: checked where it is installed
FRAMEWORKS = {"tb_convfilters.ultralytics": "ultralytics"}
PRIVATE_PACKAGES = {"_record", "_writing", "_serving", "_commands", "_dashboard"}
# Floors, bottom up: a module imports only from its own floor or below.
FLOORS = [
    {"_record", "_dashboard"},
    {"_writing"},
    {"__init__", "summary", "reader", "keras", "torch", "lightning", "flax", "vis", "plot"}
    | {"doctor", "compare", "importing", "spectra", "dynamics"}
    | {"transformers", "fastai", "ultralytics"},
    {"_serving", "_commands"},
    {"plugin", "cli", "record", "fs"},
]
# Internal modules the docs once named: kept importable, with a DeprecationWarning.
MOVED = {"record": "make_record", "fs": "walk"}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_documented_name_imports(module):
    if module in FRAMEWORKS and importlib.util.find_spec(FRAMEWORKS[module]) is None:
        pytest.skip(f"{FRAMEWORKS[module]} is not installed")
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lacks {missing}"


def test_entry_points_resolve():
    eps = metadata.entry_points()
    plugin = [ep for ep in eps.select(group="tensorboard_plugins") if ep.name == "convfilters"]
    assert [ep.value for ep in plugin] == ["tb_convfilters.plugin:ConvFiltersLoader"]
    assert plugin[0].load() is importlib.import_module("tb_convfilters.plugin").ConvFiltersLoader
    cli = [ep for ep in eps.select(group="console_scripts") if ep.name == "tb-convfilters"]
    assert [ep.value for ep in cli] == ["tb_convfilters.cli:main"]


def test_top_level_is_public_or_private_packages():
    public = {m.split(".")[1] for m in PUBLIC if m.count(".") == 1}
    found = {(m.name, m.ispkg) for m in pkgutil.iter_modules(tb_convfilters.__path__)}
    names = {name for name, _ in found}
    assert {name for name, ispkg in found if name.startswith("_")} <= {
        name for name, ispkg in found if ispkg
    }, "a private module at the top: group it into a private package"
    assert names - PRIVATE_PACKAGES - public - set(MOVED) - {"frontend"} == set()
    assert PRIVATE_PACKAGES <= names


@pytest.mark.parametrize("old", sorted(MOVED))
def test_moved_modules_import_and_warn_once(old):
    code = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        f"    from tb_convfilters.{old} import {MOVED[old]}\n"
        f"    from tb_convfilters.{old} import {MOVED[old]}\n"
        f"    import tb_convfilters.{old} as m; m.{MOVED[old]}\n"
        "print(len([w for w in seen if issubclass(w.category, DeprecationWarning)]))\n"
        "print(seen[0].message); print(seen[0].filename)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "1", out
    assert f"tb_convfilters.{old} is private and moved to tb_convfilters._record." in out[1]
    assert out[2] == "<string>", "the warning points at the importing line"


def _floor(top: str) -> int:
    (floor,) = [i for i, names in enumerate(FLOORS) if top in names]
    return floor


def test_imports_run_one_way():
    package = Path(tb_convfilters.__file__).parent
    upward = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        here = _floor(parts[0])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("tb_convfilters.") and name != "tb_convfilters.frontend":
                    top = name.split(".")[1]
                    if top in {n for floor in FLOORS for n in floor} and _floor(top) > here:
                        upward.append(f"{'/'.join(parts)} imports {name}")
    assert not upward, upward


def test_the_training_frameworks_load_only_when_their_module_is_imported():
    code = (
        "import sys, tb_convfilters, tb_convfilters.torch\n"
        "print(sorted(m for m in ('transformers', 'fastai', 'ultralytics', 'timm', "
        "'lightning') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
