"""TensorBoard's notebook magic (`%load_ext tensorboard`, `%tensorboard --logdir logs`),
run in a real IPython shell, starts a TensorBoard that has the Filters tab."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
from support import free_port, http_get, wait_for

from tb_convfilters import PLUGIN_NAME, Writer

MAGIC = """
import sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "tensorboard")
shell.run_line_magic("tensorboard", sys.argv[1])
"""


def test_notebook_magic_serves_the_filters_tab(tmp_path, monkeypatch):
    from tensorboard import manager

    with Writer(str(tmp_path / "logs" / "train")) as writer:
        writer.kernel("conv/kernel", np.ones((3, 3, 1, 2), np.float32), 0)
    binary = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    monkeypatch.setenv("TENSORBOARD_BINARY", binary)
    port = free_port()
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            MAGIC,
            f"--logdir {tmp_path / 'logs'} --port {port} --host 127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    info = next(i for i in manager.get_all() if i.port == port)
    try:
        assert "Launching TensorBoard" in shown, shown
        base = f"http://127.0.0.1:{port}/"
        listing = wait_for(
            lambda: json.loads(http_get(base + "data/plugins_listing")[1]).get(PLUGIN_NAME),
            what="the Filters plugin listed",
        )
        assert listing["enabled"] and listing["tab_name"] == "Filters"
        status, body, _ = http_get(base + "data/plugin/convfilters/static/index.js")
        assert status == 200 and b"export function render" in body
        status, body, _ = http_get(base + "data/plugin/convfilters/tags")
        assert status == 200 and b"conv/kernel" in body
    finally:
        os.kill(info.pid, signal.SIGTERM)
