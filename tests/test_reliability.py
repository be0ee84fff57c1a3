"""Writing side: bad input is refused with a clear message, odd values are stored
faithfully, and oversized tensors are refused when written and when served."""

from __future__ import annotations

import json
import os
import re
import warnings

import ml_dtypes
import numpy as np
import pytest
from support import PREFIX, http_get, load_npy, plugin_client, tensorboard

import tb_convfilters
from tb_convfilters import summary
from tb_convfilters._record import encoding, record
from tb_convfilters._record import stats as sweep

KERNEL = np.random.default_rng(1).standard_normal((3, 3, 4, 6)).astype(np.float32)
STORABLE = ", ".join(encoding.STORABLE_DTYPES)


def _kernel(**kwargs):
    return lambda: summary.kernel_pb("k", kwargs.pop("data", KERNEL), **kwargs)


# (call, exception, regex the message must match: argument, bad value, what is allowed)
BAD_INPUT = {
    "rank": (
        _kernel(data=np.zeros((3, 3, 4))),
        ValueError,
        r"data has shape \(3, 3, 4\) \(rank 3\) but layout 'HWIO' needs rank 4",
    ),
    "rank-0": (_kernel(data=np.float32(1)), ValueError, r"shape \(\) \(rank 0\).*needs rank 4"),
    "unknown layout": (
        _kernel(layout="HWCN"),
        ValueError,
        r"layout='HWCN' is not a kernel layout; expected one of: WIO, OIW, HWIO",
    ),
    "activation layout for a kernel": (
        _kernel(layout="NHWC"),
        ValueError,
        r"layout='NHWC' is not a kernel layout; expected one of",
    ),
    "layout not a string": (_kernel(layout=None), ValueError, r"layout=None is not a kernel"),
    "strings": (
        _kernel(data=np.full((1, 1, 1, 2), "x")),
        TypeError,
        rf"data has dtype 'str32'; expected a real numeric array of {STORABLE}",
    ),
    "complex": (
        _kernel(data=KERNEL.astype(np.complex64)),
        TypeError,
        r"data has dtype 'complex64'; expected a real numeric array of float64",
    ),
    "object": (
        _kernel(data=np.empty((1, 1, 1, 1), dtype=object)),
        TypeError,
        r"data has dtype 'object'; expected a real numeric array",
    ),
    "ragged": (
        _kernel(data=[[1.0, 2.0], [3.0]]),
        TypeError,
        r"data of type list is not an array",
    ),
    "bool": (
        _kernel(data=np.ones((1, 1, 1, 2), bool)),
        TypeError,
        r"data has dtype 'bool'; expected a real numeric array",
    ),
    "int64 without dtype": (
        _kernel(data=np.ones((1, 1, 1, 2), np.int64)),
        TypeError,
        rf"data has dtype 'int64', which is not stored as is; pass dtype= one of: {STORABLE}",
    ),
    "empty": (
        _kernel(data=np.zeros((3, 3, 0, 4), np.float32)),
        ValueError,
        r"data has shape \(3, 3, 0, 4\) with no elements; expected at least one",
    ),
    "dtype not storable": (
        _kernel(dtype="int32"),
        TypeError,
        rf"dtype='int32' cannot be stored; expected None or one of: {STORABLE}",
    ),
    "dtype unknown": (_kernel(dtype="fp8"), TypeError, r"dtype='fp8' cannot be stored; expected"),
    "image_shape product": (
        _kernel(data=np.zeros((784, 10), np.float32), layout="IO", image_shape=(28, 28, 3)),
        ValueError,
        r"image_shape=\(28, 28, 3\) must be 3 positive sizes whose product is the 784 inputs",
    ),
    "image_shape rank": (
        _kernel(data=np.zeros((784, 10), np.float32), layout="IO", image_shape=(28, 28)),
        ValueError,
        r"image_shape=\(28, 28\) must be 3 positive sizes",
    ),
    "image_shape type": (
        _kernel(data=np.zeros((784, 10), np.float32), layout="IO", image_shape="abc"),
        TypeError,
        r"image_shape='abc' must be \(height, width, channels\)",
    ),
    "image_shape on a conv": (
        _kernel(image_shape=(3, 3, 4)),
        ValueError,
        r"image_shape applies to Dense layouts 'IO' and 'OI', not 'HWIO'",
    ),
    "max_filters zero": (
        _kernel(max_filters=0),
        ValueError,
        r"max_filters=0 must be a positive integer or a list of indices",
    ),
    "max_filters index": (
        _kernel(max_filters=[1, 99]),
        ValueError,
        r"max_filters=\[1, 99\] has indices outside 0..5",
    ),
    "max_filters type": (
        _kernel(max_filters="all"),
        TypeError,
        r"max_filters='all' must be a positive integer or a list of indices",
    ),
    "max_channels on activations": (
        lambda: record.make_record(
            np.ones((1, 2, 2, 3)), kind="activation", layout="NHWC", max_channels=1
        ),
        ValueError,
        r"max_channels does not apply to layout 'NHWC'",
    ),
    "max_samples": (
        lambda: summary.activation_pb("a", np.ones((1, 2, 2, 3), np.float32), max_samples=0),
        ValueError,
        r"max_samples=0 must be a positive integer",
    ),
    "max_bytes": (
        _kernel(max_bytes=100),
        ValueError,
        r"data of shape \(3, 3, 4, 6\) is 864 bytes as float32, over max_bytes=100; "
        r"raise max_bytes, log fewer filters \(max_filters/max_channels\)",
    ),
    "max_bytes after dtype": (
        _kernel(max_bytes=431, dtype="float16"),
        ValueError,
        r"is 432 bytes as float16, over max_bytes=431",
    ),
    "max_bytes invalid": (
        _kernel(max_bytes=-5),
        ValueError,
        r"max_bytes=-5 must be a positive integer \(bytes\) or None",
    ),
    "tag": (
        lambda: summary.kernel_pb("", KERNEL),
        ValueError,
        r"tag='' must be a non-empty string",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_with_a_clear_message(case):
    call, exception, message = BAD_INPUT[case]
    with pytest.raises(exception, match=message):
        call()


@pytest.mark.parametrize(
    "step, exception, message",
    [
        (-1, ValueError, r"step=-1 must be a non-negative integer"),
        (2**63, ValueError, r"step=9223372036854775808 must be a non-negative integer up to"),
        (1.5, TypeError, r"step=1.5 must be a non-negative integer"),
        (2.0, TypeError, r"step=2.0 must be a non-negative integer"),
        ("3", TypeError, r"step='3' must be a non-negative integer"),
        (True, TypeError, r"step=True must be a non-negative integer"),
        (None, TypeError, r"step=None must be a non-negative integer"),
        (np.float32(1), TypeError, r"must be a non-negative integer"),
    ],
)
def test_bad_step_is_refused_and_nothing_is_written(tmp_path, step, exception, message):
    with tb_convfilters.Writer(tmp_path / "run") as w:
        w.kernel("k", KERNEL, 0)
        w.flush()
        size = os.path.getsize(w.path)
        with pytest.raises(exception, match=message):
            w.kernel("k", KERNEL, step)
        w.flush()
        assert os.path.getsize(w.path) == size  # no partial record
        w.kernel("k", KERNEL + 1, 1)
    steps = plugin_client(tmp_path).get(PREFIX + "steps?run=run&tag=k").json
    assert [s["step"] for s in steps] == [0, 1]


@pytest.mark.parametrize("blocking", [True, False])
@pytest.mark.parametrize("shape", [(3, 3, 4, 6), (3, 3, 256, 256)])  # one thread; two
def test_failure_after_the_payload_went_out_leaves_no_half_record(
    tmp_path, monkeypatch, shape, blocking
):
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    written = []

    def fail(self):  # the stats fail once the payload is in the file (or its buffer)
        written.append(w._event_file._file.tell())
        raise MemoryError("no memory for the stats")

    with tb_convfilters.Writer(tmp_path / "run", blocking=blocking) as w:
        path = w.path
        w.kernel("k", data, 0)
        w.flush()
        size = os.path.getsize(path)
        with monkeypatch.context() as m:
            m.setattr(sweep._Sweep, "result", fail)
            if blocking:  # raised by the call itself
                with pytest.raises(MemoryError, match="no memory for the stats"):
                    w.kernel("k", data, 1)
            else:  # by the next call (here: flush), naming the record, the cause chained
                w.kernel("k", data, 1)
                with pytest.raises(tb_convfilters.WriterError, match="tag 'k' step 1") as e:
                    w.flush()
                assert (e.value.tag, e.value.step) == ("k", 1)
                assert isinstance(e.value.__cause__, MemoryError)
                assert "no memory for the stats" in str(e.value)
        w.flush()
        assert written[0] > size + data.nbytes  # the payload had gone out ...
        assert os.path.getsize(path) == size  # ... and was taken back
        w.kernel("k", data + 1, 2)
    client = plugin_client(tmp_path)
    assert [s["step"] for s in client.get(PREFIX + "steps?run=run&tag=k").json] == [0, 2]
    got = client.get(PREFIX + "tensor?run=run&tag=k&step=2")
    assert got.status_code == 200 and load_npy(got.data).tobytes() == (data + 1).tobytes()


def test_threads_sharing_one_writer_interleave_whole_records(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from tb_convfilters import reader

    rng = np.random.default_rng(3)
    # >= 1 MiB takes the two-thread path (payload written while a worker checksums)
    shapes = {"big": (3, 3, 128, 256), "small": (3, 3, 4, 6)}
    data = {
        (t, name, step): rng.standard_normal(shape).astype(np.float32)
        for t in range(4)
        for name, shape in shapes.items()
        for step in range(3)
    }
    with tb_convfilters.Writer(tmp_path / "run") as w:

        def log(t: int) -> None:
            for (thread, name, step), array in data.items():
                if thread == t:
                    w.kernel(f"t{t}/{name}", array, step)

        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(log, t) for t in range(4)]:
                future.result(timeout=120)  # a deadlock fails here
    for (t, name, step), array in data.items():
        got = reader.read(tmp_path, "run", f"t{t}/{name}", step)
        assert got.tobytes() == array.tobytes(), (t, name, step)


def test_numpy_integer_steps_and_largest_step_are_accepted(tmp_path):
    with tb_convfilters.Writer(tmp_path / "run") as w:
        w.kernel("k", KERNEL, np.int64(3))
        w.kernel("k", KERNEL, np.uint8(4))
        w.kernel("k", KERNEL, 2**63 - 1)
    steps = plugin_client(tmp_path).get(PREFIX + "steps?run=run&tag=k").json
    assert [s["step"] for s in steps] == [3, 4, 2**63 - 1]


ODD = np.array(
    [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-40, -1e-45, 3.0e38, -3.0e38, 1.0], np.float32
)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_odd_values_are_stored_bit_exact_and_flagged_in_stats(tmp_path, dtype):
    """NaN, +-Inf, -0.0 and denormals survive writing and serving bit for bit."""
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    odd = ODD.astype(np.float64)
    if dtype == "float64":
        odd[5] = 5e-324  # the smallest float64 denormal
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float16 overflows some of these on purpose
        data = odd.astype(np_dtype).reshape(1, 1, 2, 5)  # 5 filters of 2 values
    with tb_convfilters.Writer(tmp_path / "run") as w:
        w.kernel("k", data, 0)
    client = plugin_client(tmp_path)
    r = client.get(PREFIX + "tensor?run=run&tag=k&step=0")
    assert r.status_code == 200
    got = load_npy(r.data)
    if dtype == "bfloat16":  # served widened to float32, exactly
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.view(np.uint32) >> 16, data.view(np.uint16))
        assert not (got.view(np.uint32) & 0xFFFF).any()
    else:
        assert got.dtype == np.dtype(dtype) and got.tobytes() == data.tobytes()
    assert np.signbit(got.reshape(-1)[3])  # -0.0 kept its sign

    stats = client.get(PREFIX + "stats?run=run&tag=k").json
    names = stats["names"]
    rows = stats["steps"][0]["values"]
    nonfinite = [row[names.index("nonfinite")] for row in rows]
    flat = data.astype(np.float64).reshape(2, 5)  # rows: I, columns: O (the filters)
    expected = (~np.isfinite(flat)).mean(axis=0)
    assert expected.any()
    np.testing.assert_allclose(nonfinite, expected)
    for row, column in zip(rows, flat.T, strict=True):
        finite = column[np.isfinite(column)]
        lo, hi = row[names.index("min")], row[names.index("max")]
        if finite.size:
            assert lo == pytest.approx(finite.min(), rel=1e-6)
            assert hi == pytest.approx(finite.max(), rel=1e-6)
        else:
            assert lo is None and hi is None  # JSON has no NaN: non-finite -> null
    json.dumps(stats, allow_nan=False)


def test_float16_overflow_warns_once_per_tensor_and_is_flagged(tmp_path):
    data = np.full((1, 1, 2, 3), 1.0, np.float32)
    data[0, 0, 0, :] = 1e6  # 3 values over float16's 65504
    with tb_convfilters.Writer(tmp_path / "run", dtype="float16") as w:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            w.kernel("k", data, 0)
            w.flush()  # the background writer converts: its warning comes with the next call
    overflow = [c for c in caught if issubclass(c.category, RuntimeWarning)]
    assert [str(c.message) for c in overflow] == [
        "data: 3 finite values overflowed to inf when converted to float16"
    ]
    assert overflow[0].filename == __file__  # points at the caller's line
    client = plugin_client(tmp_path)
    r = client.get(PREFIX + "tensor?run=run&tag=k")
    got = load_npy(r.data)
    assert got.dtype == np.float16 and np.isinf(got[0, 0, 0]).all()
    header = json.loads(r.headers["X-Convfilters-Header"])
    assert header["dtype"] == "float16" and header["source_dtype"] == "float32"
    stats = client.get(PREFIX + "stats?run=run&tag=k").json
    column = stats["names"].index("nonfinite")
    assert [row[column] for row in stats["steps"][0]["values"]] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    "data, dtype, message",
    [
        (np.array([1e300, 1.0]), "float32", r"1 finite values overflowed to inf .* float32"),
        (
            np.array([3.4e38, 1.0], np.float32),
            "bfloat16",
            r"1 finite values overflowed .* bfloat16",
        ),
        (np.array([70000, 1], np.int64), "float16", r"1 finite values overflowed .* float16"),
        (np.array([-300, 300, 1]), "int8", r"2 values are NaN, inf or outside -128..127"),
        (np.array([-1, 255, 256]), "uint8", r"2 values are NaN, inf or outside 0..255"),
    ],
)
def test_lossy_conversion_warns(data, dtype, message):
    with pytest.warns(RuntimeWarning, match=message):
        summary.kernel_pb("k", data.reshape(1, 1, 1, -1), dtype=dtype)


def test_conversion_that_fits_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary.kernel_pb("k", np.arange(6).reshape(1, 1, 2, 3), dtype="int8")
        summary.kernel_pb("k", KERNEL, dtype="float16")
        summary.kernel_pb("k", np.array([np.nan, np.inf]).reshape(1, 1, 1, 2), dtype="float16")


def test_checksums_match_the_blobs():
    pb = summary.kernel_pb("k", KERNEL)
    blobs = pb.value[0].tensor.string_val
    assert len(blobs) == 4 and "payload_crc32c" not in encoding.decode_header(blobs[0])
    header, payload, stats = encoding.decode_blobs_header(blobs), blobs[1], blobs[2]
    assert header["payload_crc32c"] == encoding.crc(payload)
    assert header["stats_crc32c"] == encoding.crc(stats)
    encoding.check_payload(header, payload)
    flipped = bytearray(payload)
    flipped[5] ^= 1
    with pytest.raises(encoding.RecordError, match="payload checksum mismatch"):
        encoding.npy_bytes(header, bytes(flipped))
    with pytest.raises(encoding.RecordError, match="stats checksum mismatch"):
        encoding.decode_stats(header, stats[:-1] + bytes([stats[-1] ^ 1]))


# ---- serving a tensor over the size limit, and a smaller view of it ----

BIG = np.random.default_rng(2).standard_normal((3, 3, 8, 16)).astype(np.float32)  # 4608 bytes
LIMIT_MB = 2000 / (1 << 20)  # 2000 bytes


@pytest.fixture(scope="module")
def capped_logdir(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("capped")
    with tb_convfilters.Writer(logdir / "run ü/ä") as w:
        w.kernel("conv/kernel", BIG, 0, description='<img src=x onerror="alert(1)">')
        w.kernel("conv/kernel", BIG + 1, 1)
        w.kernel("picked", BIG, 0, max_filters=[9, 3, 12, 1, 0], max_channels=[7, 2, 5])
        w.kernel("torch", BIG.transpose(3, 2, 0, 1), 0, layout="OIHW")
        w.kernel("depthwise", BIG, 0, layout="HWIM")
        w.kernel("bf16", BIG, 0, dtype="bfloat16")
        w.activation("act", np.ones((2, 4, 4, 40), np.float32), 0)
    return logdir


def _get(client, query):
    r = client.get(PREFIX + query)
    return r.status_code, r.data, r.headers


def _view_cases():
    """(query, expected array, expected header items) for views of BIG."""
    return [
        ("tag=conv/kernel&step=0&max_filters=3", BIG[..., :3], {"filters": [0, 1, 2]}),
        ("tag=conv/kernel&step=1&max_filters=2", BIG[..., :2] + 1, {"filters": [0, 1]}),
        ("tag=conv/kernel&step=0&max_channels=2", BIG[:, :, :2], {"channels": [0, 1]}),
        (
            "tag=conv/kernel&step=0&max_filters=4&max_channels=3",
            BIG[:, :, :3, :4],
            {"filters": [0, 1, 2, 3], "channels": [0, 1, 2]},
        ),
        (  # composes with the indices kept when writing
            "tag=picked&max_filters=2&max_channels=2",
            BIG[:, :, [7, 2]][..., [9, 3]],
            {"filters": [9, 3], "channels": [7, 2]},
        ),
        ("tag=torch&max_filters=3", BIG.transpose(3, 2, 0, 1)[:3], {"filters": [0, 1, 2]}),
        ("tag=depthwise&max_filters=2", BIG[:, :, :2], {"filters": [0, 1]}),
        ("tag=act&max_filters=5", np.ones((2, 4, 4, 5), np.float32), {"filters": list(range(5))}),
    ]


@pytest.mark.parametrize("case", range(len(_view_cases())))
def test_view_of_a_tensor_over_the_limit(capped_logdir, case):
    query, expected, items = _view_cases()[case]
    client = plugin_client(capped_logdir, max_tensor_mb=LIMIT_MB)
    run = "run=run%20%C3%BC/%C3%A4&"
    tag = query.split("&")[0]
    status, body, _ = _get(client, "tensor?" + run + tag)
    if tag != "tag=picked":  # the only one stored under the limit
        error = json.loads(body)
        assert status == 413 and error["limit_bytes"] == 2000 and error["nbytes"] > 2000
        assert "--convfilters_max_tensor_mb" in error["error"]
        assert "max_filters=N" in error["error"]
        assert f"is {error['nbytes']} bytes, over the limit of 2000" in error["error"]

    status, body, headers = _get(client, "tensor?" + run + query)
    assert status == 200, body
    got = load_npy(body)
    assert got.shape == expected.shape and got.tobytes() == expected.tobytes()
    header = json.loads(headers["X-Convfilters-Header"])
    assert header["shape"] == list(expected.shape)
    assert header["full_shape"] != header["shape"]
    assert "payload_crc32c" not in header  # it described the stored payload
    for key, value in items.items():
        assert header[key] == value


def test_view_of_bfloat16_is_widened_exactly(capped_logdir):
    client = plugin_client(capped_logdir, max_tensor_mb=LIMIT_MB)
    status, body, _ = _get(client, "tensor?run=run%20%C3%BC/%C3%A4&tag=bf16&max_filters=5")
    assert status == 200
    want = BIG[..., :5].astype(ml_dtypes.bfloat16).astype(np.float32)
    assert load_npy(body).tobytes() == want.tobytes()


def test_view_of_patterns_keeps_the_first_images(tmp_path):
    if not hasattr(tb_convfilters.Writer, "patterns"):
        pytest.skip("Writer.patterns is not there")
    images = np.random.default_rng(3).random((40, 4, 4, 3), np.float32)
    with tb_convfilters.Writer(tmp_path / "run") as w:
        w.patterns("pat", images, 0, filters=list(range(100, 140)))
    client = plugin_client(tmp_path, max_tensor_mb=LIMIT_MB)
    assert _get(client, "tensor?run=run&tag=pat")[0] == 413
    status, body, headers = _get(client, "tensor?run=run&tag=pat&max_filters=3")
    assert status == 200 and load_npy(body).tobytes() == images[:3].tobytes()
    assert json.loads(headers["X-Convfilters-Header"])["filters"] == [100, 101, 102]


def test_view_caps_that_change_nothing_serve_the_stored_tensor(capped_logdir):
    client = plugin_client(capped_logdir)
    status, body, headers = _get(
        client,
        "tensor?run=run%20%C3%BC/%C3%A4&tag=conv/kernel&step=0&max_filters=16&max_channels=99",
    )
    assert status == 200 and load_npy(body).tobytes() == BIG.tobytes()
    header = json.loads(headers["X-Convfilters-Header"])
    assert "full_shape" not in header and "filters" not in header
    assert header["payload_crc32c"] == encoding.crc(BIG)


@pytest.mark.parametrize(
    "query, status, needle",
    [
        ("tag=conv/kernel&max_filters=0", 400, "max_filters='0' is not a count"),
        ("tag=conv/kernel&max_filters=-1", 400, "max_filters='-1' is not a count"),
        ("tag=conv/kernel&max_filters=1.5", 400, "expected an integer 1..999999999"),
        ("tag=conv/kernel&max_channels=abc", 400, "max_channels='abc' is not a count"),
        ("tag=conv/kernel&max_channels=", 400, "max_channels='' is not a count"),
        ("tag=conv/kernel&max_filters=1&max_filters=2", 400, "given 2 times"),
        ("tag=conv/kernel&max_filters=99999999999", 400, "is not a count"),
        ("tag=act&max_channels=1", 400, "max_channels does not apply to layout 'NHWC'"),
        ("tag=depthwise&max_channels=1", 400, "max_channels does not apply to layout 'HWIM'"),
        ("tag=conv/kernel&max_filters=16", 413, "over the limit of 2000"),
    ],
)
def test_view_parameters_are_checked(capped_logdir, query, status, needle):
    client = plugin_client(capped_logdir, max_tensor_mb=LIMIT_MB)
    got, body, headers = _get(client, "tensor?run=run%20%C3%BC/%C3%A4&" + query)
    assert got == status and headers["Content-Type"].startswith("application/json")
    assert needle in json.loads(body)["error"]


def test_real_tensorboard_limit_flag_and_unicode_run(capped_logdir):
    """--convfilters_max_tensor_mb is honoured by a real server; 'run ü/ä' works end to end."""
    flag = f"--convfilters_max_tensor_mb={LIMIT_MB}"
    with tensorboard(capped_logdir, load_fast="true", extra=(flag,)) as base:
        status, body, _ = http_get(base + PREFIX + "tags")
        tags = json.loads(body)
        assert status == 200 and list(tags) == ["run ü/ä"]
        assert tags["run ü/ä"]["conv/kernel"]["description"] == '<img src=x onerror="alert(1)">'
        url = base + PREFIX + "tensor?run=run%20%C3%BC%2F%C3%A4&tag=conv%2Fkernel&step=1"
        status, body, _ = http_get(url)
        assert status == 413 and json.loads(body)["limit_bytes"] == 2000
        status, body, headers = http_get(url + "&max_filters=3")
        assert status == 200 and load_npy(body).tobytes() == (BIG[..., :3] + 1).tobytes()
        assert json.loads(headers["X-Convfilters-Header"])["filters"] == [0, 1, 2]
        status, body, _ = http_get(base + PREFIX + "steps?run=run+%C3%BC/%C3%A4&tag=conv/kernel")
        assert status == 200 and [s["step"] for s in json.loads(body)] == [0, 1]
        status, body, _ = http_get(base + PREFIX + "stats?run=run%20%C3%BC/%C3%A4&tag=picked")
        assert status == 200 and len(json.loads(body)["steps"][0]["values"]) == 5


# ---- the Keras callback never breaks training ----


def _fit_with_broken_layer(logdir, monkeypatch, **options):
    keras = pytest.importorskip("keras")
    keras_module = pytest.importorskip("tb_convfilters.keras")
    original = keras_module.make_record
    bad_shape = (1, 1, 4, 2)

    def make_record(data, **kwargs):  # logging the layer named "bad" fails every time
        if np.shape(data) == bad_shape:
            raise ValueError("simulated failure while logging")
        return original(data, **kwargs)

    monkeypatch.setattr(keras_module, "make_record", make_record)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(4, 3, name="good"),
            keras.layers.Conv2D(2, 1, name="bad"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).standard_normal((8, 6, 6, 1)).astype(np.float32)
    callback = keras_module.FiltersCallback(logdir, **options)
    return model.fit(x, np.zeros((8, 2)), epochs=3, verbose=0, callbacks=[callback])


def test_keras_callback_reports_a_failing_layer_once_and_training_goes_on(tmp_path, monkeypatch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _fit_with_broken_layer(tmp_path, monkeypatch)
    assert len(history.history["loss"]) == 3  # training finished
    reports = [str(c.message) for c in caught if "FiltersCallback" in str(c.message)]
    assert len(reports) == 1, reports  # once, not once per epoch
    assert "'bad'" in reports[0] and "simulated failure while logging" in reports[0]
    client = plugin_client(tmp_path)
    tags = client.get(PREFIX + "tags").json["train"]
    assert set(tags) == {"good/kernel"}
    steps = client.get(PREFIX + "steps?run=train&tag=good/kernel").json
    assert [s["step"] for s in steps] == [0, 1, 2]


def test_keras_callback_can_raise_instead(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=re.escape("simulated failure while logging")):
        _fit_with_broken_layer(tmp_path, monkeypatch, raise_errors=True)
