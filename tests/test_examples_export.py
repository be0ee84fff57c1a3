"""``tb-convfilters export`` writes dataset examples as .npz (their arrays and crops), not the
packed record bytes, and the probe inputs as a .npy."""

from __future__ import annotations

import json

import numpy as np

from tb_convfilters import ReceptiveField, Writer, cli
from tb_convfilters._record.receptive_field import cut


def _brute(a, k):
    """indices, values, positions (C, k, 2) of each channel's top-k inputs by their maxima."""
    idx, val, pos = [], [], []
    for c in range(a.shape[-1]):
        order = sorted(range(len(a)), key=lambda i: (-a[i, ..., c].max(), i))[:k]
        idx.append(order)
        val.append([a[i, ..., c].max() for i in order])
        pos.append([np.unravel_index(np.argmax(a[i, ..., c]), a.shape[1:3]) for i in order])
    return np.array(idx), np.array(val), np.array(pos)


def test_export_examples_as_npz(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 6, 6, 2)).astype(np.float32)
    a = rng.normal(size=(5, 3, 3, 4)).astype(np.float32)
    field = ReceptiveField((-1, -1), (2, 2), (4, 4))
    with Writer(tmp_path / "logs" / "run") as w:
        w.activation("known", a, 2, inputs=x, examples=2, receptive_field=field, max_filters=[1, 3])
        w.activation("unknown", a, 2, inputs=x, examples=2)
        w.activation("bare", a, 2, examples=2)
    out = tmp_path / "out"
    assert cli.main(["export", str(tmp_path / "logs"), "--out", str(out), "--quiet"]) == 0
    idx, val, pos = _brute(a, 2)

    known = np.load(out / "run" / "known" / "examples" / "2.npz")
    assert sorted(known.files) == ["channels", "crops", "indices", "positions", "values"]
    np.testing.assert_array_equal(known["channels"], [1, 3])
    np.testing.assert_array_equal(known["indices"], idx[[1, 3]])
    np.testing.assert_array_equal(known["values"], val[[1, 3]])
    np.testing.assert_array_equal(known["positions"], pos[[1, 3]])
    for row, c in enumerate([1, 3]):
        for j in range(2):
            box = [
                (s + p * jp, n)
                for s, p, jp, n in zip(field.start, pos[c, j], field.jump, field.size, strict=True)
            ]
            np.testing.assert_array_equal(known["crops"][row, j], cut(x[idx[c, j]], [0, 1], box))

    unknown = np.load(out / "run" / "unknown" / "examples" / "2.npz")
    assert sorted(unknown.files) == ["channels", "crops", "indices", "maps", "positions", "values"]
    np.testing.assert_array_equal(unknown["crops"], x[idx])
    maps = np.stack([a[idx[c], ..., c] for c in range(4)])  # (C, k, 3, 3)
    np.testing.assert_array_equal(unknown["maps"], maps)

    bare = np.load(out / "run" / "bare" / "examples" / "2.npz")
    assert sorted(bare.files) == ["channels", "indices", "maps", "positions", "values"]  # no crops

    (inputs,) = (out / "run" / "examples_inputs").iterdir()
    np.testing.assert_array_equal(np.load(inputs / "2.npy"), x)
    index = json.loads((out / "index.json").read_text())
    files = {e["file"]: e for e in index["arrays"]}
    assert files["run/known/examples/2.npz"]["kind"] == "examples"
    assert files["run/known/examples/2.npz"]["of"] == "known"
