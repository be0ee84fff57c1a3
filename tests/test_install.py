"""What users install: the wheel, the sdist and ``pip install .`` in fresh venvs.

An editable install (what the rest of the suite uses) hides packaging bugs: the
Filters tab was blank from a wheel while every other test passed. Here each
distribution is installed without ``-e`` and without TensorFlow into a fresh venv
(one per Python, reused across distributions), from a folder where the checkout
is not importable; that venv's ``Writer`` writes a logdir, that venv's
``tensorboard`` serves it, and Chromium must draw the grid's pixels.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from browser_support import expected_diverging, grid_selector, lut_of, tile_pixels
from support import http_get, load_npy, plugin_frame, tensorboard_process

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = f"{sys.version_info.major}.{sys.version_info.minor}"
# The oldest and newest Pythons setup.py supports, and the one the suite runs on.
PYTHONS = sorted({"3.10", DEFAULT, "3.13"}, key=lambda v: tuple(map(int, v.split("."))))
RUN, TAG = "train", "conv1/kernel"
WRITE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tb_convfilters
    from tb_convfilters._dashboard import colormaps
    assert colormaps.lut("diverging").shape == (257, 3)  # colormaps.json shipped in the package
    print(tb_convfilters.__file__)
    kernel = np.random.default_rng(3).normal(size=(3, 3, 4, 6)).astype(np.float32)
    rng = np.random.default_rng(4)
    inputs = rng.normal(size=(12, 6, 6, 1)).astype(np.float32)
    maps = rng.normal(size=(12, 6, 6, 6)).astype(np.float32)
    field = tb_convfilters.ReceptiveField((-1, -1), (1, 1), (3, 3))  # a 3x3 "same" conv
    with tb_convfilters.Writer(sys.argv[1]) as w:
        w.kernel("conv1/kernel", kernel, step=2, layout="HWIO")
        w.activation("conv1/activation", maps, 2, inputs=inputs, receptive_field=field, examples=2)
    """
)


def _interpreter(version: str) -> str | None:
    """A python`version` executable: on PATH, or under pyenv (the machines have 3.10-3.13)."""
    for candidate in (
        shutil.which(f"python{version}"),
        *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python3"))),
    ):
        if (
            candidate
            and subprocess.run([candidate, "-c", "import venv"], capture_output=True).returncode
            == 0
        ):
            return candidate
    return None


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that points Python at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    return env


def _run(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, (
        f"{' '.join(map(str, args))}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
    return done


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """The sdist, and the wheel built from it, as ``python -m build`` makes them."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=out)
    (wheel,) = out.glob("tb_convfilters-*.whl")
    (sdist,) = out.glob("tb_convfilters-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, ".": ROOT}


_venvs: dict[str, Path] = {}


def _venv(version: str, base: Path) -> Path:
    """One fresh venv per Python for the whole run; each test reinstalls the package."""
    if version not in _venvs:
        python = _interpreter(version)
        if python is None:
            if os.environ.get("CI"):
                pytest.fail(f"Python {version} is missing (the machines have it under pyenv)")
            pytest.skip(f"Python {version} is not installed here")
        venv = base / f"venv{version}"
        _run([python, "-m", "venv", str(venv)], cwd=base)
        _venvs[version] = venv
    return _venvs[version]


CASES = [(v, kind) for v in PYTHONS for kind in ("wheel", "sdist")] + [(DEFAULT, ".")]


@pytest.mark.parametrize(
    ("version", "kind"),
    CASES,
    ids=[f"py{v}-{'pip-install-dot' if k == '.' else k}" for v, k in CASES],
)
def test_installed_package_draws_the_grid(version, kind, dists, tmp_path_factory, tmp_path, page):
    venv = _venv(version, tmp_path_factory.getbasetemp())
    python = str(venv / "bin" / "python")
    # Dependencies come with the first install into a venv; later ones replace the package.
    again = ["--no-deps"] if (venv / ".deps").exists() else []
    _run(
        [python, "-m", "pip", "install", "-q", "--force-reinstall", *again, str(dists[kind])],
        cwd=tmp_path,
        timeout=900,
    )
    (venv / ".deps").touch()

    # No TensorFlow in the venv: users of the Writer need none.
    probe = subprocess.run(
        [python, "-c", "import tensorflow"],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
    )
    assert probe.returncode != 0, "TensorFlow got installed: the plugin must not need it"

    logdir = tmp_path / "logs"
    (tmp_path / "write.py").write_text(WRITE)
    where = _run([python, "write.py", str(logdir / RUN)], cwd=tmp_path).stdout.strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()), f"imported from {where}"

    with tensorboard_process(
        logdir,
        command=[str(venv / "bin" / "tensorboard")],
        load_fast=None,  # as a user starts it
        env=_clean_env(),
        cwd=tmp_path,
    ) as (base, _):
        status, body, _ = http_get(f"{base}/data/plugin/convfilters/static/index.js")
        assert status == 200, body[:300]
        status, body, headers = http_get(
            f"{base}/data/plugin/convfilters/tensor?run={RUN}&tag=conv1%2Fkernel&step=2"
        )
        assert status == 200, body[:300]
        kernel = load_npy(body)
        assert json.loads(headers["X-Convfilters-Header"])["layout"] == "HWIO"
        status, body, _ = http_get(
            f"{base}/data/plugin/convfilters/examples?run={RUN}&tag=conv1%2Factivation&rows=0"
        )
        assert status == 200, body[:300]
        answer = json.loads(body)
        assert answer["k"] == 2 and answer["crops"]["shape"] == [1, 2, 3, 3, 1], answer

        page.goto(f"{base}/#convfilters")
        frame = plugin_frame(page)
        canvas = frame.wait_for_selector(grid_selector(RUN, TAG, 2), timeout=30000)
        tiles = np.transpose(kernel, (3, 2, 0, 1))  # rows = filters, cols = input channels
        got = tile_pixels(frame, canvas, tiles.shape)
        want = expected_diverging(tiles, lut_of(frame, "diverging"))
        assert np.abs(got - want).max() <= 1, "the grid's pixels are not the kernel's colours"
        assert not page.console_problems, page.console_problems
