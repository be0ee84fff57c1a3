"""Reading logged tensors back (``tb_convfilters.reader``) and ``tb-convfilters export``."""

from __future__ import annotations

import json
import os
import re
import types

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tb_convfilters import Writer, cli, reader, summary
from tb_convfilters._record import encoding

rng = np.random.default_rng(0)
K32 = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
K32[0, 0, 0, 0] = np.nan
KBF = rng.standard_normal((4, 2, 3, 3)).astype(ml_dtypes.bfloat16)
K8 = rng.integers(-128, 128, (5, 6), dtype=np.int8)
ACT = rng.standard_normal((2, 4, 5, 3)).astype(np.float16)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """Runs: "." (the logdir itself), "a" (two files), "nested/b" (TF2 ops beside scalars)."""
    root = tmp_path_factory.mktemp("logs")
    with Writer(root) as w:
        w.kernel("root/kernel", K8, 0, layout="IO")
    with Writer(root / "a") as w:
        w.kernel("conv/kernel", K32 * 0, 0)
        w.kernel("conv/kernel", K32, 5)
        w.kernel("conv/kernel", K32 * 2, 2)  # logged out of order: 5 is still the latest
        w.kernel("t/weight", KBF, 1, layout="OIHW")
    with Writer(root / "a", filename_suffix=".second") as w:  # a second file in the same run
        w.activation("conv/activation", ACT, 5, layout="NHWC", max_samples=2)
        w.kernel("conv/kernel", K32 * 3, 2)  # step 2 again: the last one written wins
    tf_writer = tf.summary.create_file_writer(str(root / "nested" / "b"))
    with tf_writer.as_default():
        for step in range(3):
            tf.summary.scalar("loss", 1.0 / (step + 1), step=step)
            summary.kernel("dense/kernel", tf.constant(K8.astype(np.float32) * step), step=step,
                           layout="IO", dtype="float16")
    tf_writer.close()
    return root


def test_list_names_runs_tags_and_steps(logdir):
    assert reader.list(logdir) == {
        ".": {"root/kernel": [0]},
        "a": {"conv/activation": [5], "conv/kernel": [0, 2, 5], "t/weight": [1]},
        "nested/b": {"dense/kernel": [0, 1, 2]},  # the scalars are not ours
    }
    assert reader.list(str(logdir / "a")) == {".": reader.list(logdir)["a"]}


def test_read_is_exact_for_every_dtype(logdir):
    k = reader.read(logdir, "a", "conv/kernel", 5)
    assert k.dtype == np.float32 and k.tobytes() == K32.tobytes()  # NaN bits included
    k[0, 0, 0, 0] = 1.0  # a writable copy
    bf = reader.read(logdir, "a", "t/weight", 1)
    assert bf.dtype == ml_dtypes.bfloat16 and bf.tobytes() == KBF.tobytes()
    i8 = reader.read(logdir, ".", "root/kernel")
    assert i8.dtype == np.int8 and np.array_equal(i8, K8)
    act = reader.read(logdir, "a", "conv/activation")
    assert act.tobytes() == ACT[:2].tobytes()
    d = reader.read(logdir, "nested/b", "dense/kernel", 2)
    assert d.dtype == np.float16 and d.tobytes() == (K8.astype(np.float32) * 2).astype(
        np.float16).tobytes()


def test_read_latest_step_and_duplicate_steps(logdir):
    assert reader.read(logdir, "a", "conv/kernel").tobytes() == K32.tobytes()  # step 5
    assert reader.read(logdir, "a", "conv/kernel", 2).tobytes() == (K32 * 3).tobytes()


@pytest.mark.parametrize(
    "args,message",
    [
        (("zzz", "conv/kernel"), r"run 'zzz' not found in .*; runs: \., a, nested/b"),
        (("a", "nope"), r"tag 'nope' not found in run 'a'; tags: conv/activation, conv/kernel, "
                        r"t/weight"),
        (("a", "conv/kernel", 3), r"step 3 not found in run 'a', tag 'conv/kernel'; it has "
                                  r"steps 0, 2, 5"),
    ],
)
def test_unknown_names_list_what_exists(logdir, args, message):
    with pytest.raises(reader.NotFoundError, match=message):
        reader.read(logdir, *args)


def test_missing_logdir(tmp_path):
    with pytest.raises(reader.NotFoundError, match="is not a directory"):
        reader.list(tmp_path / "missing")


def test_entries_stream_one_step_at_a_time(logdir):
    stream = reader.entries(logdir, run="a", tag="conv/kernel")
    assert isinstance(stream, types.GeneratorType)
    got = [(e.run, e.tag, e.step) for e in stream]
    assert got == [("a", "conv/kernel", s) for s in (0, 5, 2, 2)]  # file order, both files
    first = next(reader.entries(logdir, run="nested/b"))
    assert first.header()["source_dtype"] == "float32" and first.header()["layout"] == "IO"
    assert first.array().dtype == np.float16


def test_reads_any_path_tensorboard_can(tmp_path):
    """A non-local filesystem through TensorBoard's gfile (TensorFlow's in-memory ram://)."""
    with Writer(tmp_path / "src") as w:
        w.kernel("k", K32, 4)
    remote = f"ram://{tmp_path.name}/logs/run1"
    tf.io.gfile.makedirs(remote)
    for name in os.listdir(tmp_path / "src"):
        tf.io.gfile.copy(str(tmp_path / "src" / name), f"{remote}/{name}")
    base = f"ram://{tmp_path.name}/logs"
    assert reader.list(base) == {"run1": {"k": [4]}}
    assert reader.read(base, "run1", "k").tobytes() == K32.tobytes()


# ---- tb-convfilters export ----


def load(path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def test_export_reproduces_every_array(logdir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["export", str(logdir), "--out", str(out)]) == 0
    index = json.loads((out / "index.json").read_text())
    files = {a["file"]: a for a in index["arrays"]}
    assert sorted(files) == [
        "%2E/root/kernel/0.npy",
        "a/conv/activation/5.npy",
        "a/conv/kernel/0.npy",
        "a/conv/kernel/2.npy",
        "a/conv/kernel/5.npy",
        "a/t/weight/1.npy",
        "nested/b/dense/kernel/0.npy",
        "nested/b/dense/kernel/1.npy",
        "nested/b/dense/kernel/2.npy",
    ]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.npy")) == sorted(files)
    for rel, info in files.items():
        want = reader.read(logdir, info["run"], info["tag"], info["step"])
        got = load(out / rel)
        if want.dtype == ml_dtypes.bfloat16:  # no .npy type: widened to float32, exactly
            assert got.dtype == np.float32 and info["dtype"] == "bfloat16"
            want = want.astype(np.float32)
        assert got.tobytes() == want.tobytes(), rel
    assert load(out / "a/conv/kernel/2.npy").tobytes() == (K32 * 3).tobytes()
    kernel = files["a/conv/kernel/5.npy"]
    assert (kernel["layout"], kernel["shape"], kernel["kind"]) == ("HWIO", [3, 3, 2, 4], "kernel")
    assert files["nested/b/dense/kernel/1.npy"]["source_dtype"] == "float32"
    assert "payload_crc32c" not in kernel and "version" not in kernel
    assert "wrote 9 arrays" in capsys.readouterr().err


def test_export_filters(logdir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["export", str(logdir), "--out", str(out), "--run", "a", "--run", "nested/b",
            "--tag", "conv/kernel", "--tag", "dense/kernel", "--step", "2", "--quiet"]
    assert cli.main(argv) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.npy")) == [
        "a/conv/kernel/2.npy", "nested/b/dense/kernel/2.npy"
    ]
    assert capsys.readouterr().err == ""


def test_export_names_are_filesystem_safe(tmp_path):
    logdir = tmp_path / "logs"
    with Writer(logdir / "r 1") as w:
        for tag in ("../../escape", "a b:c?/kernel", "/lead//double", "%2E"):
            w.kernel(tag, K8, 3, layout="IO")
    out = tmp_path / "out"
    assert cli.main(["export", str(logdir), "--out", str(out), "--quiet"]) == 0
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.npy"))
    assert files == [
        "r%201/%252E/3.npy",
        "r%201/%2E%2E/%2E%2E/escape/3.npy",
        "r%201/%2F/lead/%2F/double/3.npy",
        "r%201/a%20b%3Ac%3F/kernel/3.npy",
    ]
    assert all(np.array_equal(load(out / f), K8) for f in files)
    assert not list(tmp_path.glob("escape*"))


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--run", "zzz"], r"runs \['zzz'\] not found; runs: \., a, nested/b"),
        (["--run", "a", "--tag", "nope"], r"tag 'nope' not found; the selected runs have: "
                                          r"conv/activation \(steps 5\); conv/kernel"),
        (["--run", ".", "--step", "9"], r"step 9 not found; .*root/kernel \(steps 0\)"),
    ],
)
def test_export_errors_list_what_exists(logdir, tmp_path, capsys, extra, message):
    assert cli.main(["export", str(logdir), "--out", str(tmp_path / "o"), "--quiet", *extra]) == 1
    assert re.search(message, capsys.readouterr().err)


def test_export_skips_unreadable_steps_and_fails(tmp_path, capsys):
    logdir = tmp_path / "logs"
    good = summary.kernel_pb("k", K32, layout="HWIO")
    bad = summary.kernel_pb("k", K32, layout="HWIO")
    bad.value[0].tensor.string_val[1] = bad.value[0].tensor.string_val[1][:-4]  # truncated
    writer = EventFileWriter(str(logdir / "run"))
    writer.add_event(event_pb2.Event(step=0, wall_time=1.0, summary=good))
    writer.add_event(event_pb2.Event(step=1, wall_time=2.0, summary=bad))
    writer.close()
    out = tmp_path / "out"
    assert cli.main(["export", str(logdir), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "run 'run', tag 'k', step 1 is unreadable: payload has 284 bytes" in err
    assert "1 unreadable steps skipped" in err
    assert load(out / "run/k/0.npy").tobytes() == K32.tobytes()
    assert not (out / "run/k/1.npy").exists()
    with pytest.raises(encoding.RecordError, match="step 1 is unreadable"):
        reader.read(logdir, "run", "k", 1)
