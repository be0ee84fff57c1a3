"""Hostile names in a real browser: run names, tag names, descriptions and server error
messages holding HTML/JS are shown as text and run nothing; the dashboard loads nothing
from outside TensorBoard and triggers no Content-Security-Policy violation."""

from __future__ import annotations

import re
import urllib.parse

import numpy as np
import pytest
from support import plugin_frame, tensorboard

import tb_convfilters
from tb_convfilters._dashboard.files import frontend_dir

# Each payload would set top.__pwned (or open a dialog) if it ever became markup.
RUN_IMG = "<img src=x onerror=top.__pwned=1>"
RUN_SCRIPT = '"><script>top.__pwned=2</script>'  # holds "/": a nested run directory
TAG_SVG = "<svg onload=top.__pwned=3>"
TAG_IFRAME = '"><iframe src=javascript:top.__pwned=4>'
DESCRIPTION = (
    "<script>top.__pwned=5</script><img src=x onerror=alert(6)> "
    "[link](javascript:alert(7)) <style>body{display:none}</style>"
)
TOO_BIG = "<b onmouseover=alert(8)>big</b>"  # over the size limit: its error names it
SERIES = {
    RUN_IMG: (TAG_SVG, TAG_IFRAME),
    RUN_SCRIPT: ("conv/kernel", TOO_BIG),
}

# Runs in every frame before any page script: collects CSP violations.
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("hostile") / "logs"
    rng = np.random.default_rng(0)
    for run, tags in SERIES.items():
        with tb_convfilters.Writer(logdir / run) as w:
            for tag in tags:
                shape = (3, 3, 64, 64) if tag == TOO_BIG else (3, 3, 2, 4)
                for step in (0, 1):
                    w.kernel(
                        tag, rng.normal(size=shape), step, dtype="float32", description=DESCRIPTION
                    )
    # The Python loader: the Rust one cannot read blobs of names holding '"'.
    flag = "--convfilters_max_tensor_mb=0.1"
    with tensorboard(logdir, load_fast="false", extra=(flag,)) as base:
        yield base


def test_no_html_sinks_in_the_dashboard_code():
    """Data can only reach the page as text: no markup-parsing sinks at all."""
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment"
        r"|\beval\(|new Function|setAttribute\(\s*[\"']on|srcdoc|DOMParser"
    )
    static = frontend_dir() / "static"
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(static.rglob("*.js"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if sinks.search(line)
    ]
    assert not found, found


def _frame_report(frame) -> dict:
    return frame.evaluate(
        """() => ({
            pwned: window.__pwned ?? top.__pwned ?? null,
            csp: window.__csp || [],
            handlers: Array.from(document.querySelectorAll("*")).flatMap((e) =>
                Array.from(e.attributes).filter((a) => a.name.startsWith("on"))
                    .map((a) => e.tagName + " " + a.name)),
            injected: Array.from(document.querySelectorAll("img, iframe, svg[onload], style, b"))
                .map((e) => e.outerHTML.slice(0, 80)),
            scripts: Array.from(document.scripts, (s) => s.textContent)
                .filter((t) => t.includes("pwned")),
        })"""
    )


def test_hostile_names_are_text_and_nothing_runs_or_leaves_tensorboard(served, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    try:
        for run, tags in SERIES.items():
            for tag in tags:
                state = urllib.parse.urlencode({"run": run, "tag": tag})
                page.goto("about:blank")  # a hash-only change would not reload the dashboard
                page.goto(f"{served}/#convfilters&cf=" + urllib.parse.quote(state, safe=""))
                frame = plugin_frame(page)
                frame.wait_for_function(
                    "([run, tag]) => document.querySelector('#run-select')?.value === run"
                    " && document.querySelector('#tag-select')?.value === tag",
                    arg=[run, tag],
                    timeout=30000,
                )
                if tag == TOO_BIG:  # the 413 message names the run and tag: as text
                    status = frame.locator("section.panel .panel-status").first
                    frame.wait_for_function(
                        "() => (document.querySelector('section.panel .panel-status')"
                        "?.textContent || '').includes('over the limit')",
                        timeout=30000,
                    )
                    assert TOO_BIG in status.inner_text()
                else:
                    frame.wait_for_selector("canvas.main-grid[data-step='1']", timeout=30000)
                runs = frame.evaluate(
                    "Array.from(document.querySelectorAll('#run-select option'),"
                    " (o) => o.textContent)"
                )
                assert sorted(runs) == sorted(SERIES)
                options = frame.evaluate(
                    "Array.from(document.querySelectorAll('#tag-select option'),"
                    " (o) => o.textContent)"
                )
                assert sorted(options) == sorted(tags)
                description = frame.locator("#tag-description").text_content()
                assert description == DESCRIPTION
                assert run in frame.locator("section.panel .panel-title").first.text_content()
                report = _frame_report(frame)
                assert report == {
                    "pwned": None,
                    "csp": [],
                    "handlers": [],
                    "injected": [],
                    "scripts": [],
                }, (run, tag, report)
                page.wait_for_timeout(300)  # let any deferred handler fire
        assert page.evaluate("window.__pwned ?? null") is None
        assert page.evaluate("window.__csp") == []
    finally:
        context.close()

    bad = [p for p in problems if "Content Security Policy" in p or "Refused to" in p]
    assert not bad, bad
    assert not [p for p in problems if p.startswith(("pageerror", "dialog"))], problems
    origin = served.rstrip("/")
    outside = [u for u in requests if not u.startswith((origin + "/", "data:", "blob:"))]
    assert not outside, outside
    entry = r"/data/plugin/convfilters/static/[0-9a-f]{12}/index\.js$"
    assert any(re.search(entry, u) for u in requests)
