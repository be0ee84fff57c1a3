"""Every layer kind x layout x dtype, written by the three writing APIs (TF-free Writer,
TF2 summary op, numpy ``*_pb`` + TensorBoard's EventFileWriter), read back through
TensorBoard's data provider and the plugin's routes bit for bit."""

from __future__ import annotations

import json
import warnings

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from support import PREFIX, load_npy, plugin_client
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tb_convfilters import Writer, summary
from tb_convfilters._record import encoding

# NaN and inf are planted in every float case: numpy must not warn about them on our side.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

BF16 = np.dtype(ml_dtypes.bfloat16)
# (layer kind, layout, shape): the layouts of every conv-like layer of Keras and PyTorch.
KERNELS = [
    ("conv1d_keras", "WIO", (3, 2, 4)),
    ("conv1d_torch", "OIW", (4, 2, 3)),
    ("conv2d_keras", "HWIO", (3, 3, 2, 4)),
    ("conv2d_torch", "OIHW", (4, 2, 3, 3)),
    ("conv3d_keras", "DHWIO", (2, 3, 3, 2, 3)),
    ("conv3d_torch", "OIDHW", (3, 2, 2, 3, 3)),
    ("depthwise1d", "WIM", (3, 3, 2)),
    ("depthwise2d", "HWIM", (3, 3, 3, 2)),
    ("separable/depthwise", "HWIM", (3, 3, 3, 2)),
    ("separable/pointwise", "HWIO", (1, 1, 6, 4)),
    ("transpose1d_keras", "WOI", (3, 4, 2)),
    ("transpose2d_keras", "HWOI", (3, 3, 4, 2)),
    ("transpose3d_keras", "DHWOI", (2, 2, 2, 4, 2)),
    ("transpose1d_torch", "IOW", (2, 4, 3)),
    ("transpose2d_torch", "IOHW", (2, 4, 3, 3)),
    ("transpose3d_torch", "IODHW", (2, 4, 2, 2, 2)),
    ("dense_keras", "IO", (12, 5)),
    ("linear_torch", "OI", (5, 12)),
]
ACTIVATIONS = [
    ("act1d_last", "NWC", (3, 7, 4)),
    ("act1d_first", "NCW", (3, 4, 7)),
    ("act2d_last", "NHWC", (3, 5, 6, 4)),
    ("act2d_first", "NCHW", (3, 4, 5, 6)),
    ("act3d_last", "NDHWC", (3, 2, 3, 4, 4)),
    ("act3d_first", "NCDHW", (3, 4, 2, 3, 4)),
]
SOURCE_DTYPES = ["float64", "float32", "float16", "bfloat16", "int8"]
# (source dtype, requested dtype): stored as given (None) or converted.
CONVERSIONS = [(d, None) for d in SOURCE_DTYPES] + [
    ("float32", "float16"),
    ("float32", "bfloat16"),
    ("float64", "float16"),
    ("float64", "float32"),
]
# NaN with a payload, negative NaN, infinities, signed zero, a subnormal: per float type.
SPECIAL_BITS = {
    "float64": (np.uint64, [0x7FF8000000000123, 0xFFF8000000000005, 0x7FF0 << 48, 0xFFF0 << 48,
                            1 << 63, 1]),
    "float32": (np.uint32, [0x7FC00123, 0xFFC00005, 0x7F800000, 0xFF800000, 1 << 31, 1]),
    "float16": (np.uint16, [0x7E01, 0xFE05, 0x7C00, 0xFC00, 1 << 15, 1]),
    "bfloat16": (np.uint16, [0x7FC1, 0xFFC5, 0x7F80, 0xFF80, 1 << 15, 1]),
}
WRITERS = ["writer", "tf2", "pb"]


def numpy_dtype(name: str) -> np.dtype:
    return BF16 if name == "bfloat16" else np.dtype(name)


def make_data(shape: tuple[int, ...], dtype: str, seed: int) -> np.ndarray:
    """Random values of `dtype` with every special value planted at the front."""
    rng = np.random.default_rng(seed)
    if dtype == "int8":
        return rng.integers(-128, 128, size=shape, dtype=np.int8)
    data = (rng.standard_normal(shape) * 3).astype(np.float64).astype(numpy_dtype(dtype))
    uint, bits = SPECIAL_BITS[dtype]
    data.reshape(-1)[: len(bits)] = np.array(bits, dtype=uint).view(data.dtype)
    return data


def expected(data: np.ndarray, target: str | None) -> np.ndarray:
    return data if target is None else data.astype(numpy_dtype(target))


def cases():
    for kind, items in (("kernel", KERNELS), ("activation", ACTIVATIONS)):
        for name, layout, shape in items:
            for source, target in CONVERSIONS:
                if kind == "activation" and source == "int8":
                    continue
                tag = f"{name}/{source}_as_{target or 'given'}/{kind}"
                yield kind, tag, layout, shape, source, target


CASES = list(cases())


def write_all(logdir) -> dict[str, np.ndarray]:
    """Writes every case with every writer (one run each); returns tag -> source data."""
    sources = {}
    with Writer(logdir / "writer") as w:
        for i, (kind, tag, layout, shape, source, target) in enumerate(CASES):
            sources[tag] = data = make_data(shape, source, i)
            write = w.kernel if kind == "kernel" else w.activation
            extra = {} if kind == "kernel" else {"max_samples": 3}
            write(tag, data, step=7, layout=layout, dtype=target, **extra)

    tf_writer = tf.summary.create_file_writer(str(logdir / "tf2"))
    with tf_writer.as_default():
        for kind, tag, layout, _, _, target in CASES:
            value = tf.Variable(sources[tag]) if kind == "kernel" else tf.constant(sources[tag])
            op = summary.kernel if kind == "kernel" else summary.activation
            extra = {} if kind == "kernel" else {"max_samples": 3}
            assert op(tag, value, step=7, layout=layout, dtype=target, **extra)
    tf_writer.close()

    pb_writer = EventFileWriter(str(logdir / "pb"))
    for kind, tag, layout, _, _, target in CASES:
        make = summary.kernel_pb if kind == "kernel" else summary.activation_pb
        extra = {} if kind == "kernel" else {"max_samples": 3}
        pb = make(tag, sources[tag], layout=layout, dtype=target, **extra)
        pb_writer.add_event(event_pb2.Event(step=7, wall_time=1.0, summary=pb))
    pb_writer.close()
    return sources


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("kinds")
    sources = write_all(logdir)
    client = plugin_client(logdir)
    tags = client.get(PREFIX + "tags").json
    return client, tags, sources


def get_tensor(client, run: str, tag: str, step: int | None = None):
    query = {"run": run, "tag": tag}
    if step is not None:
        query["step"] = str(step)
    response = client.get(PREFIX + "tensor", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    header = json.loads(response.headers["X-Convfilters-Header"])
    return load_npy(response.get_data()), header


def assert_bits_equal(served: np.ndarray, want: np.ndarray) -> None:
    """`served` (from the .npy route: bfloat16 widened to float32) holds `want` bit for bit."""
    assert served.shape == want.shape
    if want.dtype == BF16:
        assert served.dtype == np.dtype("<f4")
        wide = served.view(np.uint32)
        assert not (wide & 0xFFFF).any()
        np.testing.assert_array_equal((wide >> 16).astype(np.uint16), want.view(np.uint16))
    else:
        assert served.dtype == want.dtype.newbyteorder("<")
        assert served.tobytes() == want.tobytes()


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize(
    "kind,tag,layout,shape,source,target", CASES, ids=[c[1] for c in CASES]
)
def test_round_trip_is_bit_exact(logged, writer, kind, tag, layout, shape, source, target):
    client, tags, sources = logged
    info = tags[writer][tag]
    stored = target or source
    assert (info["kind"], info["layout"], info["shape"], info["dtype"]) == (
        kind,
        layout,
        list(shape),
        stored,
    )
    served, header = get_tensor(client, writer, tag, step=7)
    assert header["dtype"] == stored
    assert header.get("source_dtype") == (source if target and target != source else None)
    assert_bits_equal(served, expected(sources[tag], target))


def test_every_case_is_listed_by_every_writer(logged):
    _, tags, _ = logged
    assert set(tags) == set(WRITERS)
    for run in WRITERS:
        assert set(tags[run]) == {c[1] for c in CASES}


def test_separable_layer_is_two_tags_sharing_a_prefix(logged):
    _, tags, _ = logged
    names = [t for t in tags["writer"] if t.startswith("separable/") and "float32_as_given" in t]
    layouts = {t.split("/")[1]: tags["writer"][t]["layout"] for t in names}
    assert layouts == {"depthwise": "HWIM", "pointwise": "HWIO"}


def test_nan_and_inf_are_stored_and_served(logged):
    client, _, sources = logged
    tag = "conv2d_keras/float32_as_given/kernel"
    served, _ = get_tensor(client, "writer", tag)
    assert np.isnan(served.reshape(-1)[:2]).all() and np.isinf(served.reshape(-1)[2:4]).all()
    stats = client.get(PREFIX + "stats", query_string={"run": "writer", "tag": tag}).json
    assert stats["steps"][0]["values"]  # served as JSON despite the NaNs (null, never NaN)


def test_float16_conversion_warns_on_overflow_and_stores_inf(tmp_path):
    data = np.array([[1.0, 70000.0], [-70000.0, 2.0]], dtype=np.float32)
    with Writer(tmp_path / "run") as w, pytest.warns(RuntimeWarning, match="2 finite values"):
        w.kernel("dense/kernel", data, step=0, layout="IO", dtype="float16")
        w.flush()  # converted in the background: the warning comes with the next call
    served, header = get_tensor(plugin_client(tmp_path), "run", "dense/kernel")
    assert header["source_dtype"] == "float32"
    np.testing.assert_array_equal(served, np.array([[1, np.inf], [-np.inf, 2]], np.float16))


@pytest.mark.parametrize(
    "layout,shape", [(layout, shape) for _, layout, shape in KERNELS if "O" in layout]
)
def test_caps_record_the_kept_indices(tmp_path, layout, shape):
    data = make_data(shape, "float32", 1)
    o_axis, i_axis = layout.index("O"), layout.index("I")
    n_out, n_in = shape[o_axis], shape[i_axis]
    with Writer(tmp_path / "run") as w:
        w.kernel("first", data, 0, layout=layout, max_filters=2, max_channels=1)
        w.kernel("picked", data, 0, layout=layout, max_filters=[n_out - 1, 0], max_channels=[1])
        w.kernel("all", data, 0, layout=layout, max_filters=n_out, max_channels=n_in + 5)
    client = plugin_client(tmp_path)
    tags = client.get(PREFIX + "tags").json["run"]
    assert (tags["first"]["filters"], tags["first"]["channels"]) == ([0, 1], [0])
    assert (tags["picked"]["filters"], tags["picked"]["channels"]) == ([n_out - 1, 0], [1])
    assert "filters" not in tags["all"] and "channels" not in tags["all"]
    for tag, filters, channels in (("first", [0, 1], [0]), ("picked", [n_out - 1, 0], [1])):
        served, header = get_tensor(client, "run", tag)
        assert (header["filters"], header["channels"]) == (filters, channels)
        want = np.take(np.take(data, filters, axis=o_axis), channels, axis=i_axis)
        assert_bits_equal(served, want)


def test_depthwise_max_filters_caps_input_channels(tmp_path):
    data = make_data((3, 3, 4, 2), "float32", 2)
    with Writer(tmp_path / "run") as w:
        w.kernel("dw", data, 0, layout="HWIM", max_filters=[3, 1])
        # I is both the filters and the input channels: max_channels caps it too
        w.kernel("dw2", data, 0, layout="HWIM", max_channels=1)
        w.kernel("dw3", data, 0, layout="HWIM", max_filters=3, max_channels=1)
    client = plugin_client(tmp_path)
    for tag, kept in (("dw", [3, 1]), ("dw2", [0]), ("dw3", [0, 1, 2])):
        served, header = get_tensor(client, "run", tag)
        assert header["filters"] == kept and "channels" not in header
        assert_bits_equal(served, data[:, :, kept, :])


@pytest.mark.parametrize("layout", ["IO", "OI"])
def test_dense_image_shape(tmp_path, layout):
    data = make_data((12, 5) if layout == "IO" else (5, 12), "float32", 3)
    with Writer(tmp_path / "run") as w:
        w.kernel("img", data, 0, layout=layout, image_shape=(2, 3, 2))
        w.kernel("grid", data, 0, layout=layout)
        with pytest.raises(ValueError, match=r"product is the 12 inputs"):
            w.kernel("bad", data, 0, layout=layout, image_shape=(3, 3, 1))
        with pytest.raises(ValueError, match="image_shape applies to Dense layouts"):
            w.kernel("conv", np.zeros((3, 3, 2, 4), "f4"), 0, layout="HWIO", image_shape=(3, 3, 2))
    client = plugin_client(tmp_path)
    tags = client.get(PREFIX + "tags").json["run"]
    assert tags["img"]["image_shape"] == [2, 3, 2]
    assert "image_shape" not in tags["grid"]
    assert_bits_equal(get_tensor(client, "run", "img")[0], data)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda w: w.kernel("t", np.zeros((3, 3, 2, 4)), 0, layout="HWCN"),
         r"layout='HWCN' is not a kernel layout; expected one of: WIO, OIW, HWIO"),
        (lambda w: w.kernel("t", np.zeros((3, 3, 2, 4)), 0, layout="NHWC"),
         r"layout='NHWC' is not a kernel layout"),
        (lambda w: w.activation("t", np.zeros((1, 3, 3, 2)), 0, layout="HWIO"),
         r"layout='HWIO' is not a activation layout; expected one of: NWC, NCW, NHWC"),
        (lambda w: w.kernel("t", np.zeros((3, 3, 2)), 0, layout="HWIO"),
         r"shape \(3, 3, 2\) \(rank 3\) but layout 'HWIO' needs rank 4"),
        (lambda w: w.kernel("t", np.zeros((3, 3, 2, 4), np.int32), 0),
         r"'int32'.* one of: float64, float32, float16, bfloat16, int8"),
        (lambda w: w.kernel("t", np.zeros((3, 3, 2, 4)), 0, max_filters=0),
         r"max_filters=0 must be a positive integer"),
        (lambda w: w.kernel("t", np.zeros((3, 3, 2, 4)), 0, max_channels=[9]),
         r"max_channels=\[9\] has indices outside 0..1"),
        (lambda w: w.kernel("t", np.zeros((3, 3, 2, 4)), -1), r"step=-1 must be a non-negative"),
    ],
)
def test_bad_arguments_name_the_value_and_what_is_allowed(tmp_path, call, message):
    with Writer(tmp_path) as w, pytest.raises((ValueError, TypeError), match=message):
        call(w)


def test_tf_function_writes_the_same_bits(tmp_path):
    """Inside tf.function the record is made when the graph runs, not at trace time."""
    var = tf.Variable(make_data((3, 3, 2, 4), "float32", 4))
    writer = tf.summary.create_file_writer(str(tmp_path / "run"))

    @tf.function
    def log(step):
        with writer.as_default():
            summary.kernel("conv/kernel", var, step=step, layout="HWIO", dtype="bfloat16")

    log(tf.constant(0, tf.int64))
    first = var.numpy()
    var.assign_add(tf.ones_like(var))
    log(tf.constant(1, tf.int64))
    writer.close()
    client = plugin_client(tmp_path)
    for step, want in ((0, first), (1, var.numpy())):
        served, _ = get_tensor(client, "run", "conv/kernel", step)
        assert_bits_equal(served, want.astype(BF16))


# ---- per-filter statistics (the `stats` route) against numpy ----


def numpy_filter_stats(rows: np.ndarray, dead: np.ndarray | None) -> np.ndarray:
    """Stats of each row of `rows` (one filter per row), computed plainly with numpy."""
    out = []
    for i, row in enumerate(rows.astype(np.float64)):
        ok = row[np.isfinite(row)]
        n = max(len(ok), 1)
        mean = ok.sum() / n
        zero = dead[i] if dead is not None else np.mean(np.abs(row) <= encoding.ZERO_EPS)
        out.append([
            np.sqrt((ok**2).sum()),
            mean,
            np.sqrt(max((ok**2).sum() / n - mean**2, 0)),
            ok.min() if len(ok) else np.nan,
            ok.max() if len(ok) else np.nan,
            zero,
            1 - len(ok) / len(row),
        ])
    return np.array(out)


def assert_stats_match(values: list, want: np.ndarray) -> None:
    got = np.array([[np.nan if v is None else v for v in row] for row in values], np.float64)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6, equal_nan=True)


def test_stats_route_matches_numpy_for_a_kernel(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.standard_normal((3, 3, 4, 5)).astype(np.float32)  # HWIO: 5 filters
    data[..., 1] = 0.0  # an all-zero filter
    data[0, 0, 0, 2] = np.nan
    data[1, 1, 1, 2] = np.inf
    data[..., 3] = np.nan  # a filter with no finite value
    data[2, 2, 3, 4] = 5e-7  # counts as zero (|w| <= 1e-6)
    with Writer(tmp_path / "run") as w:
        w.kernel("k", data, 0, layout="HWIO")
        w.kernel("k", data * 2, 1, layout="HWIO")
    stats = plugin_client(tmp_path).get(PREFIX + "stats", query_string={"run": "run", "tag": "k"})
    body = stats.json
    assert body["names"] == ["norm", "mean", "std", "min", "max", "zero_frac", "nonfinite"]
    assert [s["step"] for s in body["steps"]] == [0, 1]
    for scale, step in zip((1, 2), body["steps"], strict=True):
        rows = np.moveaxis(data * scale, 3, 0).reshape(5, -1)
        assert_stats_match(step["values"], numpy_filter_stats(rows, None))
    first = body["steps"][0]["values"]
    assert first[1][5] == 1.0 and first[3][6] == 1.0 and first[3][3] is None
    assert first[4][5] == pytest.approx(1 / 36)


def test_stats_route_matches_numpy_for_an_activation(tmp_path):
    rng = np.random.default_rng(6)
    data = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)  # NCHW: 4 channels, 15 positions
    data[:, 0] = np.maximum(data[:, 0], 0) * 0  # channel 0 dead everywhere
    data[0, 1, 0, :] = -1.0  # channel 1: row 0 <= 0 in sample 0 only, not dead there
    data[1, 1, 0, :] = -2.0  # ... and in sample 1: now the 5 positions of row 0 are dead
    data[:, 1, 1:, :] = np.abs(data[:, 1, 1:, :]) + 0.1
    data[0, 2, 2, 4] = np.nan
    data[1, 3, 1, 1] = -np.inf
    with Writer(tmp_path / "run") as w:
        w.activation("a", data, 0, layout="NCHW", max_samples=2)
    body = plugin_client(tmp_path).get(
        PREFIX + "stats", query_string={"run": "run", "tag": "a"}
    ).json
    per_channel = np.moveaxis(data, 1, 0)  # (C, N, H, W)
    rows = per_channel.reshape(4, -1)
    # Dead: a position not > 0 in every sample (NaN is not > 0).
    dead = np.all(~(per_channel > 0), axis=1).reshape(4, -1).mean(axis=1)
    assert dead[0] == 1.0 and dead[1] == pytest.approx(5 / 15)
    # Firing (fire_inputs, fire_positions, inputs): > 0 anywhere in an input / per position.
    fired = per_channel > 0
    firing = np.stack(
        [fired.any(axis=(2, 3)).mean(axis=1), fired.mean(axis=(1, 2, 3)), np.full(4, 2.0)], axis=1
    )
    assert body["names"][-3:] == ["fire_inputs", "fire_positions", "inputs"]
    expected = np.hstack([numpy_filter_stats(rows, dead), firing])
    assert_stats_match(body["steps"][0]["values"], expected)
    values = body["steps"][0]["values"]
    assert values[2][6] == pytest.approx(1 / 30) and values[3][6] == pytest.approx(1 / 30)


def test_writing_nonfinite_values_never_warns_or_fails(tmp_path):
    data = np.full((3, 3, 2, 4), np.nan, np.float32)
    data[0, 0, 0, 0] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Writer(tmp_path / "run") as w:
            w.kernel("k", data, 0, layout="HWIO")
            w.kernel("k16", data, 0, layout="HWIO", dtype="float16")
            w.activation("a", data, 0, layout="NHWC")
    served, _ = get_tensor(plugin_client(tmp_path), "run", "k16")
    assert np.isnan(served).sum() == data.size - 1 and np.isinf(served).sum() == 1
