"""tb_convfilters.flax.log_params on real Flax Linen and NNX conv models."""

from __future__ import annotations

import json

import numpy as np
import pytest

jax = pytest.importorskip("jax")
flax = pytest.importorskip("flax")
import jax.numpy as jnp  # noqa: E402
from flax import linen, nnx  # noqa: E402
from support import PREFIX, load_npy, plugin_client  # noqa: E402

from tb_convfilters import Writer  # noqa: E402
from tb_convfilters.flax import log_params  # noqa: E402


def served(client, run, tag, step):
    query = {"run": run, "tag": tag, "step": str(step)}
    response = client.get(PREFIX + "tensor", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return load_npy(response.get_data()), json.loads(response.headers["X-Convfilters-Header"])


class LinenNet(linen.Module):
    @linen.compact
    def __call__(self, x):  # (N, 8, 8, 3)
        y = linen.Conv(4, (3, 3))(x)
        y = linen.Conv(2, (3, 3), param_dtype=jnp.bfloat16, name="half")(y)
        y = linen.ConvTranspose(3, (2, 2))(y)
        z = linen.Conv(2, (3,))(y.reshape(y.shape[0], -1, 3))
        v = linen.Conv(2, (2, 2, 2))(x[..., None])
        return linen.Dense(2)(jnp.concatenate([z.mean((1,)), v.mean((1, 2, 3))], axis=-1))


def train_step(params, x):
    def loss(p):
        return jnp.mean(LinenNet().apply({"params": p}, x) ** 2)

    grads = jax.grad(loss)(params)
    return jax.tree.map(lambda p, g: (p - 0.1 * g).astype(p.dtype), params, grads)


def flat(params, names=()):
    for key, value in params.items():
        if isinstance(value, dict):
            yield from flat(value, (*names, key))
        else:
            yield "/".join((*names, key)), np.asarray(value)


def test_linen_kernels_exact_every_step(tmp_path):
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    variables = LinenNet().init(jax.random.PRNGKey(0), x)
    params = variables["params"]
    kept = {}
    for step in range(3):
        tags = log_params(tmp_path / "linen", variables if step == 0 else params, step)
        kept[step] = dict(flat(params))
        params = train_step(params, x)
    expected = {"Conv_0/kernel": "HWIO", "half/kernel": "HWIO", "ConvTranspose_0/kernel": "HWIO",
                "Conv_1/kernel": "WIO", "Conv_2/kernel": "DHWIO"}
    assert sorted(tags) == sorted(expected)
    client = plugin_client(tmp_path)
    for step, weights in kept.items():
        for tag, layout in expected.items():
            got, header = served(client, "linen", tag, step)
            assert header["layout"] == layout
            want = weights[tag]
            assert header["dtype"] == str(want.dtype)  # bfloat16 stored as bfloat16
            if want.dtype.itemsize == 2:  # served widened to float32: the same bits, 16 zeros
                bits = got.view(np.uint32)
                assert not (bits & 0xFFFF).any()
                assert (bits >> 16).astype(np.uint16).tobytes() == want.tobytes()
            else:
                assert got.tobytes() == want.tobytes()
    assert kept[0]["Conv_0/kernel"].tobytes() != kept[2]["Conv_0/kernel"].tobytes()
    # Dense kernels on request, under a prefix
    with Writer(str(tmp_path / "dense")) as writer:
        tags = log_params(writer, params, 7, prefix="model", dense=True)
    assert "model/Dense_0/kernel" in tags
    got, header = served(plugin_client(tmp_path), "dense", "model/Dense_0/kernel", 7)
    assert header["layout"] == "IO"
    assert got.tobytes() == np.asarray(params["Dense_0"]["kernel"]).tobytes()


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.stem = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.blocks = nnx.List(
            [nnx.Conv(4, 4, (3, 3), rngs=rngs), nnx.Conv(4, 2, (1, 1), rngs=rngs)]
        )
        self.head = nnx.Linear(2, 2, rngs=rngs)

    def __call__(self, x):
        y = self.stem(x)
        for block in self.blocks:
            y = nnx.relu(block(y))
        return self.head(y.mean((1, 2)))


def test_nnx_model_and_state_exact(tmp_path):
    model = NnxNet(nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 3))
    kept = {}
    for step in range(2):
        target = model if step == 0 else nnx.state(model)
        tags = log_params(str(tmp_path / "nnx"), target, step)
        kept[step] = {t: np.asarray(v) for t, v in [
            ("stem/kernel", model.stem.kernel.value),
            ("blocks/0/kernel", model.blocks[0].kernel.value),
            ("blocks/1/kernel", model.blocks[1].kernel.value)]}
        grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
        nnx.update(model, jax.tree.map(lambda p, g: p - 0.1 * g, nnx.state(model, nnx.Param),
                                       grads))
    assert sorted(tags) == sorted(kept[0])
    client = plugin_client(tmp_path)
    for step, weights in kept.items():
        for tag, value in weights.items():
            got, header = served(client, "nnx", tag, step)
            assert header["layout"] == "HWIO"
            assert got.tobytes() == value.tobytes()
    assert kept[0]["stem/kernel"].tobytes() != kept[1]["stem/kernel"].tobytes()


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no conv kernel.*dense=True"):
        log_params(tmp_path, {"Dense_0": {"kernel": jnp.zeros((3, 2))}}, 0)
    with pytest.raises(TypeError, match="writer_or_logdir of type int"):
        log_params(3, {"c": {"kernel": jnp.zeros((3, 3, 1, 2))}}, 0)
    with pytest.raises(ValueError, match="step"):
        log_params(tmp_path, {"c": {"kernel": jnp.zeros((3, 3, 1, 2))}}, -1)
