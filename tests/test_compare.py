"""Issue 17: matching filters across runs, carrying permutations, linear CKA, sample digests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tb_convfilters import Writer, cli, compare, reader
from tb_convfilters._commands import compare as compare_cli
from tb_convfilters.compare import linear_cka

NOISE = 1e-3


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA from its definition with Gram matrices (Kornblith et al., eq. 3 with a linear kernel)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h)

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def test_cka_equals_the_reference_and_its_invariances():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4, 4, 5))  # NHWC: 96 rows, 5 channels
    y = x @ rng.standard_normal((5, 7)) + 0.5 * rng.standard_normal((6, 4, 4, 7))
    rows_x, rows_y = x.reshape(-1, 5), y.reshape(-1, 7)
    assert compare.cka(x, y) == pytest.approx(reference_cka(rows_x, rows_y), rel=1e-10)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    assert compare.cka(x, x @ q) == pytest.approx(1.0, abs=1e-10)  # orthogonal transform
    assert compare.cka(x, 3.7 * x) == pytest.approx(1.0, abs=1e-10)  # isotropic scaling
    assert compare.cka(x, x[..., ::-1]) == pytest.approx(1.0, abs=1e-10)  # permutation
    big = rng.standard_normal((64, 16, 16, 8))
    independent = rng.standard_normal((64, 16, 16, 8))
    assert compare.cka(big, independent) < 0.01
    # channels-first arrays of the same activations give the same value
    nchw = np.moveaxis(y, -1, 1)
    assert compare.cka(x, nchw, "NHWC", y_layout="NCHW") == pytest.approx(compare.cka(x, y))
    with pytest.raises(ValueError, match="same samples and spatial size"):
        compare.cka(x, y[:3])


def stacked_gram_cka(feats: list[np.ndarray]) -> np.ndarray:
    """CKA matrix as computed before issue 26: one Gram matrix of all channels."""
    stacked = np.hstack(feats)
    gram = stacked.T @ stacked
    edges = np.cumsum([0] + [f.shape[1] for f in feats])
    blocks = [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    norms = [np.linalg.norm(gram[b, b]) for b in blocks]
    return np.array(
        [
            [np.sum(gram[bi, bj] ** 2) / (norms[i] * norms[j]) for j, bj in enumerate(blocks)]
            for i, bi in enumerate(blocks)
        ]
    )


@pytest.mark.parametrize("method", ["gram", "features"])
@pytest.mark.parametrize("samples, channels", [(2, [5, 5, 5, 5]), (6, [3, 4, 3, 3]), (3, [40] * 4)])
def test_cka_matrix_equals_the_stacked_gram_and_planted_truths(method, samples, channels):
    """Both ways of computing CKA (n x n Gram matrices, or channel products pair by pair)
    give the old single-Gram result, and planted truths: a copy, a rotated copy and a
    scaled copy give 1, independent noise about 0."""
    rng = np.random.default_rng(samples)
    xs = [rng.standard_normal((samples, 4, 4, c)) for c in channels]
    q, _ = np.linalg.qr(rng.standard_normal((channels[0], channels[0])))
    xs += [xs[0].copy(), xs[0] @ q, 2.5 * xs[0] + 1.0, np.zeros_like(xs[0])]
    feats = [linear_cka._features(x, "NHWC") for x in xs]
    plan = compare.plan_cka(samples * 16, [x.shape[-1] for x in xs])
    plan = compare.CkaPlan(plan.rows, plan.channels, method, plan.nbytes, plan.work)
    got = linear_cka._cka_matrix(iter(feats), plan)
    with np.errstate(invalid="ignore"):
        want = stacked_gram_cka(feats)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, equal_nan=True)
    m = len(channels)
    np.testing.assert_allclose(got[0, m : m + 3], 1.0, atol=1e-10)
    assert np.isnan(got[-1]).all()  # no variance
    big = [rng.standard_normal((16, 8, 8, 8)) for _ in range(2)]  # CKA about 8 / 1024
    plan = compare.plan_cka(16 * 64, [8, 8])
    plan = compare.CkaPlan(plan.rows, plan.channels, method, plan.nbytes, plan.work)
    feats = (linear_cka._features(x, "NHWC") for x in big)
    assert linear_cka._cka_matrix(feats, plan)[0, 1] < 0.03


def test_plan_depends_on_rows_and_channels():
    """Rows are samples x positions: few rows per channel keep row Gram matrices, many
    rows the features; memory is bounded by bytes, whatever the number of items."""
    assert compare.plan_cka(8 * 7 * 7, [512] * 24).method == "gram"
    assert compare.plan_cka(8 * 28 * 28, [64] * 24).method == "features"
    small = compare.plan_cka(8 * 14 * 14, [512] * 24)
    assert small.nbytes < 256 << 20
    compare.check_plan(small, 256 << 20, None, "knob")
    big = compare.plan_cka(64 * 28 * 28, [512] * 24)
    with pytest.raises(compare.BudgetError, match=r"over the limit of 256 MiB \(knob\)") as e:
        compare.check_plan(big, 256 << 20, None, "knob")
    assert e.value.nbytes == big.nbytes > e.value.limit_bytes == 256 << 20
    with pytest.raises(compare.BudgetError, match="multiply-adds"):
        compare.check_plan(small, None, small.work - 1, "knob")


def test_similarity_memory_is_bounded(tmp_path):
    """The dashboard's request (2 runs x 12 steps) on a 512-channel layer (8 samples of
    14 x 14): the computation's peak stays under 400 MB (the single Gram matrix of every
    channel took 1.2 GB), with the same values as the reference on two items."""
    import tracemalloc

    rng = np.random.default_rng(1)
    base = rng.standard_normal((8, 14, 14, 512), dtype=np.float32)
    items = [
        (
            (run, step),
            compare.Activation(
                base + 0.1 * step * rng.standard_normal(base.shape, dtype=np.float32), "NHWC", "d"
            ),
        )
        for run in ("a", "b")
        for step in range(12)
    ]
    tracemalloc.start()
    try:
        sim = compare.similarity_of(items)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 400e6, f"peak {peak / 1e6:.0f} MB"
    x, y = items[0][1].array, items[23][1].array
    assert sim.matrix[0, 23] == pytest.approx(compare.cka(x, y), rel=1e-9)
    assert sim.matrix[0, 23] == pytest.approx(
        reference_cka(x.reshape(-1, 512).astype(np.float64), y.reshape(-1, 512)), rel=1e-6
    )


def test_match_filters_recovers_a_permutation_with_channels_reordered_first():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 3, 4, 6))  # HWIO
    perm, cperm = rng.permutation(6), rng.permutation(4)
    b = np.empty_like(a)
    b[..., perm] = a  # b's filter perm[i] is a's filter i
    b2 = np.empty_like(b)
    b2[:, :, cperm, :] = b  # and b's input channel cperm[j] is a's channel j
    m = compare.match_filters(a, b2, "HWIO", channel_permutation=cperm)
    np.testing.assert_array_equal(m.permutation, perm)
    assert m.mean_cosine == pytest.approx(1.0)
    np.testing.assert_allclose(b2[:, :, cperm][..., m.permutation], a)
    with pytest.raises(ValueError, match="permutation of 0..3"):
        compare.match_filters(a, b2, channel_permutation=[0, 1, 2])
    with pytest.raises(ValueError, match="cannot be matched"):
        compare.match_filters(a, b2[..., :5])


def test_depthwise_channels_move_with_their_filters():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 3, 5, 2))  # HWIM: filter i*2+m reads channel i
    cperm = rng.permutation(5)
    b = np.empty_like(a)
    b[:, :, cperm] = a
    m = compare.match_filters(a, b, "HWIM")
    np.testing.assert_array_equal(m.permutation, (cperm[:, None] * 2 + np.arange(2)).ravel())
    assert m.mean_cosine == pytest.approx(1.0)


def permuted_copy(kernels: dict, layouts: dict, rng) -> tuple[dict, dict]:
    """Each layer's filters permuted, the next layer's input channels permuted to match."""
    out, perms, prev = {}, {}, None
    for tag, w in kernels.items():
        layout = layouts[tag]
        o, i = layout.index("O"), layout.index("I")
        perm = rng.permutation(w.shape[o])
        b = np.empty_like(w)
        b[(slice(None),) * o + (perm,)] = w
        if prev is not None and w.shape[i] == len(prev):
            c = np.empty_like(b)
            c[(slice(None),) * i + (prev,)] = b
            b = c
        out[tag] = b + NOISE * rng.standard_normal(b.shape)
        perms[tag], prev = perm, perm
    return out, perms


@pytest.mark.parametrize("layout", ["HWIO", "OIHW"])
def test_align_recovers_planted_permutations_from_event_files(tmp_path, layout):
    rng = np.random.default_rng(3)
    sizes = [("c1", 1, 8), ("c2", 8, 16), ("c3", 16, 16), ("head", 144, 10)]
    shape = {"HWIO": lambda i, o: (3, 3, i, o), "OIHW": lambda i, o: (o, i, 3, 3)}[layout]
    kernels = {f"{n}/kernel": rng.standard_normal(shape(i, o)) for n, i, o in sizes}
    layouts = dict.fromkeys(kernels, layout)
    copy, perms = permuted_copy(kernels, layouts, rng)
    for run, ks in (("a", kernels), ("b", copy)):
        with Writer(tmp_path / run) as w:
            for tag, k in ks.items():
                w.kernel(tag, k.astype(np.float32), 5, layout=layout)
    matches = compare.align(tmp_path, "b", "a")
    assert list(matches) == [f"{n}/kernel" for n, *_ in sizes]  # logging order
    for tag in ("c1/kernel", "c2/kernel", "c3/kernel"):
        m = matches[tag]
        np.testing.assert_array_equal(m.permutation, perms[tag])
        o, i = layout.index("O"), layout.index("I")
        aligned = np.take(copy[tag], m.permutation, axis=o)
        if m.channel_permutation is not None:
            aligned = np.take(aligned, m.channel_permutation, axis=i)
        assert np.abs(aligned - kernels[tag]).max() < 10 * NOISE
        assert m.mean_cosine > 0.999 and m.unaligned_mean_cosine < 0.5
    assert not matches["c1/kernel"].chained
    assert matches["c2/kernel"].chained and matches["c3/kernel"].chained
    np.testing.assert_array_equal(matches["c3/kernel"].channel_permutation, perms["c2/kernel"])
    head = matches["head/kernel"]
    assert not head.chained and "144 input channels" in head.note
    only = compare.align(tmp_path, "b", "a", tags=["c3/kernel"], step=5)
    np.testing.assert_array_equal(only["c3/kernel"].permutation, perms["c3/kernel"])
    with pytest.raises(reader.NotFoundError, match="both have"):
        compare.align(tmp_path, "b", "a", step=6, tags=["c1/kernel"])


def write_activations(logdir, run, maps, digest, step=1, tag="c1/activation"):
    from tb_convfilters._record.record import make_record

    with Writer(logdir / run) as w:
        rec = make_record(
            maps, kind="activation", layout="NHWC", extra={"samples_digest": digest},
            complete=False,
        )
        w.write_record(tag, rec, step)


def test_similarity_refuses_different_samples_and_names_unknown_ones(tmp_path):
    rng = np.random.default_rng(4)
    maps = rng.standard_normal((4, 5, 5, 6)).astype(np.float32)
    write_activations(tmp_path, "a", maps, "d1")
    write_activations(tmp_path, "b", maps[..., ::-1] * 2, "d1")
    write_activations(tmp_path, "b", maps[..., ::-1] + 0.1, "d1", step=2)
    s = compare.similarity(tmp_path, ["a", "b"], "c1/activation")
    assert s.labels == [("a", 1), ("b", 1), ("b", 2)]
    assert s.matrix[0, 1] == pytest.approx(1.0) and s.note is None
    assert 0.9 < s.matrix[1, 2] < 1.0
    write_activations(tmp_path, "c", maps, "d2")
    with pytest.raises(ValueError, match="different inputs"):
        compare.similarity(tmp_path, ["a", "c"], "c1/activation")
    with Writer(tmp_path / "old") as w:  # as written before digests existed
        w.activation("c1/activation", maps, 1)
    old = compare.similarity(tmp_path, ["a", "old"], "c1/activation")
    assert "unknown" in old.note and "'old'" in old.note
    assert old.matrix[0, 1] == pytest.approx(1.0)


def test_keras_and_torch_record_the_digest_of_their_samples(tmp_path):
    import keras
    import torch

    from tb_convfilters.keras import FiltersCallback
    from tb_convfilters.torch import log_activations

    x = np.random.default_rng(5).standard_normal((6, 8, 8, 1)).astype("f4")
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 3, name="c")])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, np.zeros((6, 6, 6, 3), "f4"), epochs=1, verbose=0,
              callbacks=[FiltersCallback(tmp_path / "k", sample_inputs=x[:2])])
    header = next(reader.entries(tmp_path / "k", tag="c/activation")).header()
    from tb_convfilters._record.record import samples_digest

    assert header["samples_digest"] == samples_digest(x[:2])

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3))
    batch = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
    with Writer(tmp_path / "t") as w, log_activations(w, net, 0, max_samples=2):
        net(batch)
    header = next(reader.entries(tmp_path / "t", tag="0/activation")).header()
    assert header["samples_digest"] == samples_digest(batch[:2].numpy())


def test_cli_prints_matched_unmatched_and_cka(tmp_path, capsys):
    rng = np.random.default_rng(6)
    k1, k2 = rng.standard_normal((3, 3, 1, 4)), rng.standard_normal((3, 3, 4, 5))
    perm = np.array([2, 0, 3, 1])
    maps = rng.standard_normal((3, 6, 6, 4)).astype(np.float32)
    inverse = np.argsort(perm)
    runs = {"a": (k1, k2, maps), "b": (k1[..., inverse], k2[:, :, inverse], maps[..., ::-1])}
    for run, (a, b, m) in runs.items():
        with Writer(tmp_path / run) as w:
            w.kernel("conv1/kernel", a.astype("f4"), 1)
            w.kernel("conv2/kernel", b.astype("f4"), 1)
        write_activations(tmp_path, run, m, "same", tag="conv1/activation")
    assert cli.main(["compare", str(tmp_path), "--run", "b", "--base", "a", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["tag"] for r in rows] == ["conv1/kernel", "conv2/kernel"]
    assert rows[0]["mean_cosine"] == pytest.approx(1.0) and rows[0]["unaligned_mean_cosine"] < 0.9
    assert rows[1]["chained"] and rows[1]["mean_cosine"] == pytest.approx(1.0)
    assert rows[0]["cka"] == pytest.approx(1.0) and rows[1]["cka"] is None  # no conv2 maps
    assert cli.main(["compare", str(tmp_path), "--run", "b", "--base", "a"]) == 0
    out = capsys.readouterr().out
    assert "matched  unmatched" in out and "conv2/kernel" in out
    assert cli.main(["compare", str(tmp_path), "--run", "zz", "--base", "a"]) == 2
    assert "run 'zz' not found" in capsys.readouterr().err


def test_permuted_copies_of_real_models_align_exactly_with_cka_one(tmp_path):
    """Real models logged by the real integrations: every conv layer's filters permuted (and
    biases), the next layer's input channels to match, noise 1e-3 on the kernels."""
    import keras
    import torch

    from tb_convfilters.keras import FiltersCallback
    from tb_convfilters.torch import log_activations, log_kernels

    rng = np.random.default_rng(8)
    p1, p2 = rng.permutation(8), rng.permutation(6)
    x = rng.standard_normal((16, 8, 8, 1)).astype("f4")

    # PyTorch (OIHW)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 6, 3), torch.nn.ReLU()
    )
    copy = torch.nn.Sequential(*(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(),
                                 torch.nn.Conv2d(8, 6, 3), torch.nn.ReLU()))
    with torch.no_grad():
        w1, w2 = net[0].weight.numpy(), net[2].weight.numpy()
        c1, c2 = np.empty_like(w1), np.empty_like(w2)
        c1[p1] = w1
        c2[p2] = w2
        c2[:, p1] = c2.copy()
        copy[0].weight.copy_(torch.from_numpy(c1 + NOISE * rng.standard_normal(c1.shape)))
        copy[2].weight.copy_(torch.from_numpy(c2 + NOISE * rng.standard_normal(c2.shape)))
        b1, b2 = np.empty(8, "f4"), np.empty(6, "f4")
        b1[p1], b2[p2] = net[0].bias.numpy(), net[2].bias.numpy()
        copy[0].bias.copy_(torch.from_numpy(b1))
        copy[2].bias.copy_(torch.from_numpy(b2))
    batch = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
    for run, model in (("a", net), ("b", copy)):
        with Writer(tmp_path / "torch" / run) as w:
            log_kernels(w, model, 3)
            with torch.no_grad(), log_activations(w, model, 3, max_samples=16):
                model(batch)
    check_real(tmp_path / "torch", ["0/weight", "2/weight"], [p1, p2])

    # Keras (HWIO), weights set, trained with a zero learning rate
    def build():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(6, 3, activation="relu", name="c2"),
        ])
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
        return model

    a, b = build(), build()
    (k1, bias1), (k2, bias2) = (layer.get_weights() for layer in a.layers)
    d1, d2 = np.empty_like(k1), np.empty_like(k2)
    d1[..., p1] = k1
    d2[..., p2] = k2
    d2[:, :, p1] = d2.copy()
    e1, e2 = np.empty_like(bias1), np.empty_like(bias2)
    e1[p1], e2[p2] = bias1, bias2
    b.layers[0].set_weights([d1 + NOISE * rng.standard_normal(d1.shape).astype("f4"), e1])
    b.layers[1].set_weights([d2 + NOISE * rng.standard_normal(d2.shape).astype("f4"), e2])
    for run, model in (("a", a), ("b", b)):
        model.fit(x, np.zeros((16, 4, 4, 6), "f4"), epochs=1, verbose=0,
                  callbacks=[FiltersCallback(tmp_path / "keras" / run, sample_inputs=x,
                                             max_samples=16)])
    check_real(tmp_path / "keras", ["c1/kernel", "c2/kernel"], [p1, p2], run="b/train",
               base="a/train")


def check_real(logdir, tags, perms, run="b", base="a"):
    matches = compare.align(logdir, run, base)
    assert list(matches) == tags
    for tag, perm in zip(tags, perms, strict=True):
        np.testing.assert_array_equal(matches[tag].permutation, perm)
        assert matches[tag].mean_cosine > 0.999
    assert matches[tags[1]].chained
    rows = compare_cli.compare_rows(logdir, run, base, None)
    assert [r["cka"] for r in rows] == pytest.approx([1.0, 1.0], abs=1e-3)  # 1 up to the noise
