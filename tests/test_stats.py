"""The fast per-filter statistics and write path against plain numpy references."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import warnings

import crc32c
import ml_dtypes
import numpy as np
import pytest

import tb_convfilters
from tb_convfilters import reader
from tb_convfilters._record import dtypes, encoding, layouts, parallel, record
from tb_convfilters._record import events as framing
from tb_convfilters._record import stats as sweep
from tb_convfilters._writing import writer

RNG = np.random.default_rng(7)


@pytest.fixture(autouse=True, params=["numba", "numpy"])
def reductions(request, monkeypatch):
    """Every test here runs with the compiled one-pass reductions and with numpy's."""
    if request.param == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("TB_CONVFILTERS_NUMBA", "1" if request.param == "numba" else "0")
    sweep._fused.cache_clear()
    yield request.param
    sweep._fused.cache_clear()


def reference_stats(data: np.ndarray, layout: str, kind: str = "kernel") -> np.ndarray:
    """Stats of every filter computed one filter at a time in float64."""
    a = np.asarray(data).astype(np.float64)
    axes = layouts.filter_axes(layout)
    rows = np.moveaxis(a, axes, range(len(axes))).reshape(-1, *a.shape[:0])
    rows = rows.reshape(int(np.prod([a.shape[ax] for ax in axes])), -1)
    out = []
    for row in rows:
        ok = row[np.isfinite(row)]
        n = max(len(ok), 1)
        mean = ok.sum() / n
        out.append(
            [
                np.sqrt((ok**2).sum()),
                mean,
                np.sqrt(max((ok**2).sum() / n - mean**2, 0)),
                ok.min() if len(ok) else np.nan,
                ok.max() if len(ok) else np.nan,
                np.mean(np.abs(row) <= encoding.ZERO_EPS),
                1 - len(ok) / len(row),
            ]
        )
    return np.array(out)


def assert_close(got: np.ndarray, want: np.ndarray, data: np.ndarray) -> None:
    values = np.asarray(data).astype(np.float64)
    scale = np.abs(values[np.isfinite(values)]).max(initial=1.0)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale, equal_nan=True)
    # min, max, zero_frac and nonfinite are exact
    np.testing.assert_array_equal(got[:, 3:], want[:, 3:].astype(np.float32))


def kernel(shape, dtype=np.float32, scale=0.05):
    return (RNG.standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize(
    "shape, layout",
    [
        ((3, 3, 64, 128), "HWIO"),  # many blocks along the reduced axis
        ((1, 1, 2048, 512), "HWIO"),
        ((3, 3, 600, 7), "HWIO"),  # few filters: transposed path
        ((128, 64, 3, 3), "OIHW"),
        ((4, 300, 5, 5), "OIHW"),  # rows longer than one block
        ((3, 3, 96, 2), "HWIM"),  # depthwise: 192 filters i*M+m
        ((64, 96, 3, 3), "IOHW"),  # filter axis in the middle
        ((3, 3, 3, 16, 8), "DHWIO"),
        ((70000, 3), "IO"),
        ((5, 70000), "OI"),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_stats_match_numpy(shape, layout, dtype):
    data = kernel(shape, dtype)
    assert_close(sweep.filter_stats(data, layout, "kernel"), reference_stats(data, layout), data)


@pytest.mark.parametrize("layout", ["HWIO", "OIHW"])
def test_stats_nonfinite_zeros_and_constant_filters(layout):
    data = kernel((3, 3, 80, 96))
    m = data if layout == "HWIO" else np.ascontiguousarray(data.transpose(3, 2, 0, 1))
    f = (lambda i: (..., i)) if layout == "HWIO" else (lambda i: (i,))
    m[f(0)] = 0.0  # all zero
    m[f(1)] = np.nan  # nothing finite
    m[f(2)][..., 0] = np.inf
    m[f(3)][..., 1] = -np.inf
    m[f(3)][..., 2] = np.nan
    m[f(4)] = 1.5  # constant: the exact path
    m[f(5)] = 100.0 + kernel(m[f(5)].shape, scale=1e-3)  # offset: float32 sums would lose std
    m[f(6)].reshape(-1)[::7] = 0.0  # exact zeros
    m[f(7)].reshape(-1)[::5] = 5e-7  # |w| <= ZERO_EPS
    m[f(8)].reshape(-1)[::3] = -1e-6
    got = sweep.filter_stats(m, layout, "kernel")
    want = reference_stats(m, layout)
    assert_close(got, want, m)
    assert got[1, 6] == 1 and got[1, 0] == 0 and np.isnan(got[1, 3])
    assert got[4, 2] == 0 and got[6, 5] > 0.1 and got[8, 5] > 0.3
    np.testing.assert_allclose(got[5, 2], want[5, 2], rtol=1e-4)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, ml_dtypes.bfloat16])
def test_stats_of_integer_and_bfloat16_data(dtype):
    data = (RNG.standard_normal((3, 3, 40, 50)) * 20).astype(dtype)
    assert_close(sweep.filter_stats(data, "HWIO", "kernel"), reference_stats(data, "HWIO"), data)


def test_activation_stats_keep_dead_fraction():
    data = np.maximum(RNG.standard_normal((4, 30, 30, 64)), 0).astype(np.float32)
    data[..., 3] = 0.0
    got = sweep.filter_stats(data, "NHWC", "activation")
    want = reference_stats(data, "NHWC", "activation")
    dead = np.all(~(data > 0), axis=0).reshape(-1, 64).mean(axis=0)
    want[:, 5] = dead
    assert_close(got, want, data)
    assert got[3, 5] == 1


@pytest.mark.parametrize("layout, shape", [("HWIO", (3, 3, 256, 256)), ("OIHW", (256, 256, 3, 3))])
def test_make_record_parallel_path_matches_sequential(layout, shape):
    data = kernel(shape)
    assert data.nbytes >= parallel.PARALLEL_MIN_BYTES
    rec = record.make_record(data, kind="kernel", layout=layout)
    assert_close(rec.stats, reference_stats(data, layout), data)
    assert rec.payload_crc == crc32c.crc32c(data.tobytes())
    assert rec.stats_crc == crc32c.crc32c(encoding.encode_stats(rec.stats))


def test_float16_conversion_is_exact_and_warns_only_on_overflow():
    data = kernel((3, 3, 256, 300))
    data[0, 0, 0, :4] = [np.nan, np.inf, 1e-9, -7e4]
    with pytest.warns(RuntimeWarning, match="1 finite values overflowed"):
        rec = record.make_record(data, kind="kernel", layout="HWIO", dtype="float16")
    with np.errstate(over="ignore"):
        want = data.astype(np.float16)
    np.testing.assert_array_equal(rec.array.view(np.uint16), want.view(np.uint16))
    assert rec.header["source_dtype"] == "float32"
    assert_close(rec.stats, reference_stats(rec.array, "HWIO"), rec.array)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        record.make_record(kernel((3, 3, 256, 300)), kind="kernel", layout="HWIO", dtype="float16")
        record.make_record(kernel((3, 3, 8, 8)), kind="kernel", layout="HWIO", dtype="bfloat16")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_all_finite_bit_test(dtype):
    x = kernel((200_000,)).astype(encoding.numpy_dtype(dtype))
    assert dtypes._all_finite(x, dtype)
    for bad in (np.inf, -np.inf, np.nan):
        y = x.copy()
        y[123_457] = bad
        assert not dtypes._all_finite(y, dtype)
    assert not dtypes._all_finite(x[::2], dtype)  # not contiguous: unknown


@pytest.mark.parametrize("len_a, len_b", [(0, 5), (5, 0), (1, 1), (100, 12345), (9, 3 << 20)])
def test_crc_combine(len_a, len_b):
    a, b = RNG.bytes(len_a), RNG.bytes(len_b)
    combined = encoding.crc_combine(crc32c.crc32c(a), crc32c.crc32c(b), len_b)
    assert combined == crc32c.crc32c(a + b)


def read_records(path) -> list[bytes]:
    """Every TFRecord of a file, checking both CRCs (as TensorFlow's reader does)."""

    def masked(data: bytes) -> int:
        return framing._masked_crc(crc32c.crc32c(data))

    out = []
    with open(path, "rb") as f:
        while head := f.read(12):
            length = head[:8]
            assert struct.unpack("<I", head[8:])[0] == masked(length)
            data = f.read(struct.unpack("<Q", length)[0])
            assert struct.unpack("<I", f.read(4))[0] == masked(data)
            out.append(data)
    return out


def test_writer_frames_large_records_with_valid_crcs(tmp_path):
    from tensorboard.compat.proto import event_pb2

    big = kernel((3, 3, 128, 256))
    with writer.Writer(tmp_path) as w:
        w.kernel("big", big, step=3)
        w.kernel("small", kernel((3, 3, 2, 2)), step=3)
        path = w.path
    events = [event_pb2.Event.FromString(r) for r in read_records(path)]
    blobs = events[1].summary.value[0].tensor.string_val
    header, payload, stats = encoding.decode_blobs_header(blobs), blobs[1], blobs[2]
    assert payload == big.tobytes()
    assert header["payload_crc32c"] == crc32c.crc32c(payload)
    got = encoding.decode_stats(header, stats)
    assert_close(got, reference_stats(big, "HWIO"), big)
    assert events[2].summary.value[0].tag == "small"


@pytest.mark.parametrize("layout", ["HWIO", "OIHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_two_thread_stats_match_one_thread(layout, dtype, monkeypatch):
    data = kernel((3, 3, 300, 257) if layout == "HWIO" else (257, 300, 3, 3), dtype)
    data.reshape(-1)[[5, 70_000, 200_000]] = [np.nan, np.inf, 0.0]
    assert data.nbytes >= parallel.PARALLEL_MIN_BYTES
    both = sweep.filter_stats(data, layout, "kernel")
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 1 << 62)
    one = sweep.filter_stats(data, layout, "kernel")
    np.testing.assert_allclose(both, one, rtol=1e-6, atol=1e-9, equal_nan=True)
    assert_close(both, reference_stats(data, layout), data)


def test_in_parallel_runs_in_turn_on_the_worker_thread():
    def nested():
        return parallel.in_parallel(lambda: "a", lambda: "b")  # would wait on its own queue

    assert parallel.in_parallel(nested, lambda: 1) == (("a", "b"), 1)


@pytest.mark.parametrize(
    ("shape", "dtype", "to", "split"),
    [
        ((3, 3, 64, 64), np.float32, np.float32, False),  # 147 KB: one thread
        ((3, 3, 256, 256), np.float32, np.float32, False),  # 2.4 MB copy: one thread
        ((3, 3, 512, 256), np.float32, np.float32, True),  # 4.7 MB copy: two halves
        ((3, 3, 256, 256), np.float32, np.float16, True),  # 2.4 MB cast: two halves
        ((1, 2_000_001), np.float32, np.float32, True),  # a long single row: split flat
    ],
)
def test_copyto_is_exact_and_splits_large_copies(shape, dtype, to, split, monkeypatch):
    src = RNG.standard_normal(shape).astype(dtype)
    dst = np.empty(shape, to)
    calls = []
    real = parallel.in_parallel
    monkeypatch.setattr(parallel, "in_parallel", lambda *fns: calls.append(1) or real(*fns))
    parallel.copyto(dst, src, casting="no" if dtype == to else "unsafe")
    assert dst.tobytes() == src.astype(to).tobytes()
    assert bool(calls) == split


_READ_ONLY_CHILD = """
import json, logging, sys
import numpy as np
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
import tb_convfilters
from tb_convfilters import reader
from tb_convfilters._record import encoding
from tb_convfilters._record import parallel
from tb_convfilters._record import stats as sweep
from tb_convfilters._writing import writer
fused = sweep._fused()
data = np.random.default_rng(0).standard_normal((3, 3, 16, 32)).astype(np.float32)
with writer.Writer(sys.argv[1]) as w:
    w.kernel("conv/kernel", data, step=1)
(entry,) = reader.entries(sys.argv[1])
print(json.dumps({
    "package": tb_convfilters.__file__,
    "fused": None if fused is None else fused.__name__,
    "stats": encoding.decode_stats(entry.header(), entry._blob(2)).tolist(),
}))
"""


@pytest.mark.parametrize("reductions", ["numba"], indirect=True)  # numba only
def test_numba_without_a_writable_cache_compiles_uncached(reductions, tmp_path):
    """numba with a read-only package directory and no writable HOME or NUMBA_CACHE_DIR
    refuses ``cache=True`` at import (numba #4908, #5566): the kernels are compiled
    without a cache instead, and writing records works with them."""
    site, logs = tmp_path / "site", tmp_path / "logs"
    package = site / "tb_convfilters"
    shutil.copytree(
        os.path.dirname(tb_convfilters.__file__),
        package,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    # File modes do not stop root: a file where numba's cache directories would be does.
    for folder in {p.parent for p in package.rglob("*.py")}:
        (folder / "__pycache__").write_text("")
    (tmp_path / "home").write_text("")
    for path in [*site.rglob("*"), site]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NUMBA_", "XDG_", "PYTHON")) and k != "HOME"
    }
    env.update(
        HOME=str(tmp_path / "home" / "user"), PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", _READ_ONLY_CHILD, str(logs)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
    finally:
        for path in [*site.rglob("*"), site]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    assert got["package"] == str(package / "__init__.py")
    assert got["fused"] == "tb_convfilters._record.stats_compiled"  # compiled, not numpy's fallback
    assert "compiling without a cache" in out.stderr
    (entry,) = reader.entries(logs)
    data = entry.array()
    assert_close(np.array(got["stats"], np.float32), reference_stats(data, "HWIO"), data)


@pytest.mark.parametrize("reductions", ["numba"], indirect=True)  # numba only
def test_numba_that_cannot_compile_falls_back_to_numpy(reductions, monkeypatch, caplog):
    """When numba fails at import even without a cache, the reductions use numpy."""
    numba = pytest.importorskip("numba")

    def broken(*args, **kwargs):
        raise RuntimeError("no LLVM here")

    monkeypatch.setattr(numba, "njit", broken)
    monkeypatch.delitem(sys.modules, "tb_convfilters._record.stats_compiled", raising=False)
    monkeypatch.delattr(sys.modules["tb_convfilters._record"], "stats_compiled", raising=False)
    sweep._fused.cache_clear()
    with caplog.at_level(logging.DEBUG, logger="tb_convfilters"):
        assert sweep._fused() is None
        assert sweep._fused() is None
    assert [r.levelno for r in caplog.records if "using numpy" in r.message] == [logging.DEBUG]
    data = kernel((3, 3, 4, 8))
    assert_close(sweep.filter_stats(data, "HWIO", "kernel"), reference_stats(data, "HWIO"), data)
