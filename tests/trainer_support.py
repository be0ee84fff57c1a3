"""What the tests of the training-loop callbacks (transformers, fastai, ultralytics) share:
served records, the event files holding ours, and a real ``tensorboard`` showing the
Filters tab beside the framework's own scalars."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

from support import PREFIX, http_get, load_npy, tensorboard, wait_for
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from tb_convfilters import PLUGIN_NAME


def served(client, run: str, tag: str, step: int):
    """The array and header the plugin serves for one record."""
    query = {"run": run, "tag": tag, "step": str(step)}
    response = client.get(PREFIX + "tensor", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return load_npy(response.get_data()), json.loads(response.headers["X-Convfilters-Header"])


def steps_of(client, run: str, tag: str) -> list[int]:
    response = client.get(PREFIX + "steps", query_string={"run": run, "tag": tag})
    assert response.status_code == 200, response.get_data(as_text=True)
    return [s["step"] for s in json.loads(response.get_data())]


def our_files(root: Path) -> list[Path]:
    """Event files under `root` holding records of the Filters plugin."""
    found = []
    for path in sorted(root.rglob("events.out.tfevents*")):
        for event in EventFileLoader(str(path)).Load():
            if any(v.metadata.plugin_data.plugin_name == PLUGIN_NAME for v in event.summary.value):
                found.append(path)
                break
    return found


def filters_beside_scalars(logdir: Path, run: str, kernel_tag: str, scalar_tag: str) -> None:
    """A real ``tensorboard`` over `logdir` lists the Filters plugin, our `kernel_tag` in
    `run` (the plugin's ``tags`` route) and the framework's `scalar_tag` in the same run
    (TensorBoard's scalars plugin)."""
    with tensorboard(logdir) as base:
        status, body, _ = http_get(base + "/data/plugins_listing")
        assert status == 200 and json.loads(body)[PLUGIN_NAME]["enabled"], body[:300]
        status, body, _ = http_get(base + PREFIX + "tags")
        assert status == 200, body[:300]
        assert kernel_tag in json.loads(body)[run], sorted(json.loads(body))
        url = f"{base}/data/plugin/scalars/tags?" + urllib.parse.urlencode({"run": run})

        def scalar_tags() -> dict:  # TensorBoard loads the runs in the background
            status, body, _ = http_get(url)
            assert status == 200, body[:300]
            tags = json.loads(body)
            return tags.get(run, tags) if scalar_tag in tags.get(run, tags) else {}

        assert scalar_tag in wait_for(scalar_tags, what=f"scalar {scalar_tag!r} in run {run!r}")
