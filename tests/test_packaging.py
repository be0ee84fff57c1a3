"""The wheel carries the dashboard, so `pip install .` needs no node."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_frontend_and_entry_points(tmp_path):
    # A module left in build/lib by an earlier build (of a version where it still existed)
    stale = ROOT / "build" / "lib" / "tb_convfilters" / "_removed_module.py"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("tb_convfilters-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    base = ROOT / "frontend" / "static"
    static = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    assert "index.js" in static
    for name in static:
        assert f"tb_convfilters/frontend/static/{name}" in names
    assert "tb_convfilters/frontend/http_api.md" in names
    assert not any("/test/" in n or n.startswith("tests/") for n in names)
    # exactly the package's modules: none from an earlier build, none missing
    package = ROOT / "tb_convfilters"
    sources = {f"tb_convfilters/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")}
    assert {n for n in names if n.endswith(".py")} == sources
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "convfilters = tb_convfilters.plugin:ConvFiltersLoader" in text
    assert "tb-convfilters = tb_convfilters.cli:main" in text
