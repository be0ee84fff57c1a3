"""A run of 100 steps x 50 layers stays usable: ``tags`` and ``steps`` read no payloads."""

from __future__ import annotations

import time

import numpy as np
import pytest
from support import PREFIX, load_npy, load_provider
from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

import tb_convfilters
from tb_convfilters import plugin

STEPS, LAYERS = 100, 50
KERNEL = np.random.default_rng(3).standard_normal((3, 3, 4, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("large")
    with tb_convfilters.Writer(root / "run") as w:
        for step in range(STEPS):
            for layer in range(LAYERS):
                w.kernel(f"layer{layer:02d}/kernel", KERNEL + step, step)
    return root


class CountingProvider:
    """A data provider that counts the blobs read through it."""

    def __init__(self, inner):
        self._inner = inner
        self.blobs_read = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def read_blob(self, ctx, *, blob_key):
        self.blobs_read += 1
        return self._inner.read_blob(ctx, blob_key=blob_key)


def client_for(logdir, samples: int = 0, source: str = "index") -> tuple[Client, CountingProvider]:
    """A client of the plugin serving from its index, or (no logdir) from the provider."""
    provider = CountingProvider(load_provider(logdir, samples))
    where = str(logdir) if source == "index" else ""
    context = base_plugin.TBContext(logdir=where, data_provider=provider)
    app = application.TensorBoardWSGI([plugin.ConvFiltersPlugin(context)])
    return Client(app), provider


def timed_get(client: Client, route: str, **query):
    start = time.perf_counter()
    response = client.get(PREFIX + route, query_string=query)
    assert response.status_code == 200, response.data[:300]
    return response, (time.perf_counter() - start) * 1000


@pytest.mark.parametrize("source", ["index", "provider"])
def test_tags_and_steps_read_no_payloads(logdir, source):
    client, provider = client_for(logdir, source=source)
    tags, tags_ms = timed_get(client, "tags")
    assert len(tags.json["run"]) == LAYERS
    assert tags.json["run"]["layer07/kernel"]["max_step"] == STEPS - 1
    steps_ms = []
    for layer in range(LAYERS):
        steps, ms = timed_get(client, "steps", run="run", tag=f"layer{layer:02d}/kernel")
        assert [s["step"] for s in steps.json] == list(range(STEPS))
        steps_ms.append(ms)
    assert provider.blobs_read == 0  # listing reads no blob at all, payload or header
    print(
        f"\ntags {tags_ms:.1f} ms, steps median {np.median(steps_ms):.1f} ms "
        f"({STEPS} steps x {LAYERS} layers, {source})"
    )

    tensor, _ = timed_get(client, "tensor", run="run", tag="layer07/kernel", step=42)
    assert load_npy(tensor.data).tobytes() == (KERNEL + 42).tobytes()
    # The index reads the payload from the file; the provider reads the header, checks
    # and payload of that one step.
    assert provider.blobs_read == (0 if source == "index" else 3)


def test_samples_per_plugin_bounds_the_steps_kept(logdir):
    """`--samples_per_plugin=convfilters=N`: N steps per tag in memory, the last one always."""
    client, _ = client_for(logdir, samples=10, source="provider")
    steps, _ = timed_get(client, "steps", run="run", tag="layer00/kernel")
    kept = [s["step"] for s in steps.json]
    assert len(kept) == 10 and kept[-1] == STEPS - 1 and kept == sorted(kept)
    tensor, _ = timed_get(client, "tensor", run="run", tag="layer00/kernel", step=kept[3])
    assert load_npy(tensor.data).tobytes() == (KERNEL + kept[3]).tobytes()


def test_index_serves_every_step_although_tensorboard_kept_one(logdir):
    client, provider = client_for(logdir, samples=1)
    steps, _ = timed_get(client, "steps", run="run", tag="layer03/kernel")
    assert [s["step"] for s in steps.json] == list(range(STEPS))
    for step in (0, 37, STEPS - 1):
        tensor, _ = timed_get(client, "tensor", run="run", tag="layer03/kernel", step=step)
        assert load_npy(tensor.data).tobytes() == (KERNEL + step).tobytes()
    assert provider.blobs_read == 0
