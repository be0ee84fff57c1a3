"""The documentation: README.md is a front page, docs/ builds as a MkDocs site, links resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 250
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built by the venv's MkDocs with --strict (any warning aborts the build; not with
    --quiet, which hides warnings from the strict count)."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=out.parent,  # the config must not depend on the working directory
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert not re.search(r"^(WARNING|ERROR)", log, re.M), log
    return out


def _page(site: Path, md: str) -> str:
    """The HTML MkDocs built from docs/<md> (directory URLs)."""
    stem = md.removesuffix(".md")
    return (site / ("" if stem == "index" else stem) / "index.html").read_text(encoding="utf-8")


def _github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub gives the headings of a Markdown file (outside code fences)."""
    anchors, fence = set(), False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"#{1,6} (.*)", line)):
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_site_builds_strict(site):
    assert (site / "index.html").is_file()


def test_readme_is_a_front_page():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move reference text into docs/"


def test_readme_links_resolve(site):
    """Every relative link and image of README.md exists; anchors into docs/ exist on GitHub
    and in the built site."""
    text = README.read_text(encoding="utf-8")
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    assert any(t.startswith("docs/") and ".md" in t for t in targets), targets
    for target in targets:
        path, _, anchor = target.partition("#")
        file = ROOT / path if path else README
        assert file.exists(), f"README.md links to {target}: {file} does not exist"
        if not anchor:
            continue
        assert anchor in _github_anchors(file.read_text(encoding="utf-8")), (
            f"README.md links to {target}: no heading with that anchor on GitHub"
        )
        if file.parent == ROOT / "docs":
            assert f'id="{anchor}"' in _page(site, file.name), (
                f"README.md links to {target}: no such anchor in the built site"
            )


def test_site_includes_single_sources(site):
    """The HTTP API page is frontend/http_api.md and the home page reuses README sections."""
    api = _page(site, "http_api.md")
    contract = (ROOT / "frontend" / "http_api.md").read_text(encoding="utf-8")
    for heading in re.findall(r"(?m)^#{1,3} (.+)$", contract):
        words = re.sub(r"[`*]", "", heading).split("?")[0].replace("<", "&lt;").replace(">", "&gt;")
        assert words in api, f"{heading!r} of frontend/http_api.md is not on the HTTP API page"
    home = _page(site, "index.md")
    for text in ("This replaces that.", "Set up on a fresh machine", "ten lines", "kernel_pb"):
        assert text in home, f"{text!r} (from README.md) is missing on the home page"
