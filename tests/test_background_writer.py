"""The background Writer: exact records after flush, bounded memory, errors that surface,
files that survive SIGKILL and fork, and steps TensorBoard sees without a flush."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import crc32c
import ml_dtypes
import numpy as np
import pytest
from support import wait_for

import tb_convfilters
from tb_convfilters import reader
from tb_convfilters._record import events
from tb_convfilters._writing import copy_queue, writer

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(16)
KERNEL = RNG.standard_normal((3, 3, 8, 16)).astype(np.float32)
BIG = RNG.standard_normal((3, 3, 512, 256)).astype(np.float32)  # 4.7 MB: two-thread copy


def _expected(data: np.ndarray, dtype: str | None) -> np.ndarray:
    if dtype is None:
        return data
    return data.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)


@pytest.mark.parametrize("blocking", [False, True])
@pytest.mark.parametrize("dtype", [None, "float16", "bfloat16"])
def test_every_writer_call_round_trips_exactly_though_the_caller_changes_its_array(
    tmp_path, dtype, blocking
):
    kernel, big = KERNEL.copy(), BIG.copy()
    act = RNG.standard_normal((2, 5, 5, 4)).astype(np.float32)
    images = RNG.random((3, 6, 6, 3)).astype(np.float32)
    originals = {"k": kernel.copy(), "big": big.copy(), "a": act.copy(), "p": images.copy()}
    with tb_convfilters.Writer(tmp_path / "run", dtype=dtype, blocking=blocking) as w:
        w.kernel("k", kernel, 0)
        w.kernel("big", big, 0)
        w.kernel("capped", big, 0, max_filters=[3, 1], max_channels=5)
        w.activation("a", act, 0, max_samples=2)
        w.patterns("p", images, 0, filters=[4, 5, 6])
        for array in (kernel, big, act, images):  # the training step changes weights in place
            array += 1
        w.flush()
    expect = {
        "k": originals["k"],
        "big": originals["big"],
        "capped": originals["big"][:, :, :5][..., [3, 1]],
        "a": originals["a"],
        "p": originals["p"],
    }
    for tag, data in expect.items():
        got = reader.read(tmp_path, "run", tag, 0)
        want = _expected(data, dtype)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), tag


def test_torch_helpers_log_the_weights_of_the_step_not_later_ones(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from tb_convfilters.torch import log_activations, log_kernels

    _slow_writes(monkeypatch, 0.2)  # the optimizer step below runs before the write
    owned = _spy_owned(monkeypatch)

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(inplace=True), torch.nn.Conv2d(64, 64, 3)
    )
    x = torch.randn(2, 3, 32, 32)
    with tb_convfilters.Writer(tmp_path / "run") as w:
        before = model[2].weight.detach().clone().numpy()
        log_kernels(w, model, 0)
        with log_activations(w, model, 0, max_samples=2):
            conv0 = model[0](x).detach().clone().numpy()  # what the hook sees
            model(x)  # the in-place ReLU changes the conv output after the hook
        with torch.no_grad():
            model[2].weight.add_(1.0)  # an optimizer step, in place
        w.flush()
    assert reader.read(tmp_path, "run", "2/weight", 0).tobytes() == before.tobytes()
    assert reader.read(tmp_path, "run", "0/activation", 0).tobytes() == conv0.tobytes()
    # the live weights are copied; the maps are already a copy of the helper's own, as are
    # the examples (the probe inputs go through write_examples, which copies them)
    (inputs_tag,) = [tag for tag in owned if tag.startswith("examples_inputs/")]
    assert owned == {
        "0/weight": False,
        "2/weight": False,
        "0/activation": True,
        "2/activation": True,
        "0/activation/examples": True,
        "2/activation/examples": True,
        inputs_tag: False,
    }


def _spy_owned(monkeypatch) -> dict:
    """Records, by tag, whether each array reached the copy queue marked as owned (no copy)."""
    put, flags = copy_queue.CopyQueue.put, {}

    def spy(self, work, array, what, owned=False):
        if array is not None:
            flags[what[0]] = owned
        return put(self, work, array, what, owned)

    monkeypatch.setattr(copy_queue.CopyQueue, "put", spy)
    return flags


def test_torch_copies_made_by_the_helper_are_not_copied_again(monkeypatch):
    torch = pytest.importorskip("torch")
    from tb_convfilters.torch import host_numpy

    live = torch.randn(8, 4, 3, 3)
    array, copied = host_numpy(live)
    assert not copied and np.shares_memory(array, live.numpy())
    strided = torch.randn(4, 8, 3, 3, dtype=torch.bfloat16).transpose(0, 1)
    array, copied = host_numpy(strided)  # made contiguous to view its bits: a copy
    assert copied and array.tobytes() == strided.contiguous().view(torch.int16).numpy().tobytes()
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        assert host_numpy(live.cuda())[1]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_keras_callback_logs_the_weights_of_the_epoch(tmp_path, monkeypatch, jit_compile):
    """On TensorFlow the callback queues a read of each kernel, not a copy: the optimizer's
    in-place updates after it must copy the buffer first (copy on write), XLA's too."""
    keras = pytest.importorskip("keras")
    from tb_convfilters.keras import FiltersCallback

    _slow_writes(monkeypatch, 0.2)  # the training below runs before the write
    owned = _spy_owned(monkeypatch)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(64, 3, name="conv"), keras.layers.Flatten()]
    )
    model.compile(optimizer="adam", loss="mse", jit_compile=jit_compile)
    x, y = RNG.random((32, 8, 8, 1), np.float32), RNG.random((32, 2304), np.float32)
    model.fit(x, y, epochs=1, verbose=0)  # traced: the next fit starts at once
    callback = FiltersCallback(tmp_path)
    callback.set_model(model)
    callback.on_train_begin()
    kernel = model.get_layer("conv").kernel
    before = kernel.numpy().copy()
    callback.on_epoch_end(0)
    model.fit(x, y, epochs=2, verbose=0)  # the next epochs' optimizer steps
    kernel.assign_sub(np.ones_like(before))
    assert not np.array_equal(kernel.numpy(), before)
    callback.on_train_end()
    assert reader.read(tmp_path, "train", "conv/kernel", 0).tobytes() == before.tobytes()
    assert owned == {"conv/kernel": True}  # the kernel's read is queued as is


def test_the_thread_waits_for_a_burst_of_calls_to_end(monkeypatch):
    monkeypatch.setattr(copy_queue, "QUIET_SECONDS", 0.5)
    queue, done = copy_queue.CopyQueue(1 << 20), []
    queue.put(done.append, RNG.random(4), "x")
    time.sleep(0.2)  # more calls of the step could still come
    assert done == []
    queue.wait()
    assert len(done) == 1
    start = time.monotonic()
    queue.put(done.append, RNG.random(4), "x")
    queue.wait()  # a caller waiting has no more calls to make: no pause to wait for
    assert len(done) == 2 and time.monotonic() - start < 0.4
    monkeypatch.setattr(copy_queue, "MAX_DELAY", 0.3)  # calls that never pause: it starts anyway
    start = time.monotonic()
    while not len(done) == 3:
        queue.put(lambda a: done.append(a), None, "y")
        time.sleep(0.01)
        assert time.monotonic() - start < 5
    queue.close()


def _slow_writes(monkeypatch, seconds: float) -> None:
    """Every background write takes `seconds` longer (a slow disk)."""
    write_now = writer.Writer._write_now

    def slow(self, *args, **kwargs):
        time.sleep(seconds)
        return write_now(self, *args, **kwargs)

    monkeypatch.setattr(writer.Writer, "_write_now", slow)


def test_back_pressure_holds_memory_under_the_bound(tmp_path, monkeypatch):
    _slow_writes(monkeypatch, 0.05)
    bound_mb = 24  # MiB; each step is 8 MiB
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((16, 16, 64, 128), np.float32) for _ in range(4)]
    steps = [arrays[i % 4] for i in range(20)]
    tracemalloc.start()
    try:
        with tb_convfilters.Writer(tmp_path / "run", max_queue_mb=bound_mb) as w:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            for i, data in enumerate(steps):  # the producer outruns the slow disk
                w.kernel("k", data, i)
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # copies in flight stay within the bound; the record being written adds its
    # stats and their scratch buffers (~3 MB), nothing near another step
    assert peak - base <= (bound_mb + 4) << 20, (peak - base) / 2**20
    for i in (0, 7, 19):
        assert reader.read(tmp_path, "run", "k", i).tobytes() == steps[i].tobytes()


def test_run_directory_removed_mid_run_fails_the_next_call_then_logging_goes_on(tmp_path):
    run = tmp_path / "run"
    w = tb_convfilters.Writer(run)
    w.kernel("k", KERNEL, 0)
    w.flush()
    shutil.rmtree(run)
    w.kernel("k", KERNEL, 1)
    w._queue.wait()  # the writer thread has failed on it: the next call says so
    with pytest.raises(tb_convfilters.WriterError, match=r"tag 'k' step 1: FileNotFoundError"):
        w.kernel("k", KERNEL, 2)  # its own record is queued before the failure is raised
    w.kernel("k", KERNEL + 3, 3)  # logging goes on in a new file
    w.close()
    assert reader.list(tmp_path) == {"run": {"k": [2, 3]}}
    assert reader.read(tmp_path, "run", "k", 3).tobytes() == (KERNEL + 3).tobytes()


@pytest.mark.parametrize("end", ["close", "flush"])
def test_run_directory_removed_mid_run_fails_close_and_flush(tmp_path, end, monkeypatch):
    run = tmp_path / "run"
    w = tb_convfilters.Writer(run)
    w.kernel("k", BIG, 0)
    w.flush()
    shutil.rmtree(run)
    # steps 1 and 2 wait for `end`: else step 1 may fail before step 2 is logged, and
    # the call logging step 2 reports it (test_the_call_that_reports_...)
    monkeypatch.setattr(copy_queue, "QUIET_SECONDS", 60.0)
    monkeypatch.setattr(copy_queue, "MAX_DELAY", 60.0)
    w.kernel("k", BIG, 1)
    w.kernel("k", BIG, 2)
    with pytest.raises(tb_convfilters.WriterError) as e:
        getattr(w, end)()
    assert (e.value.tag, e.value.step) == ("k", 1)
    assert isinstance(e.value.__cause__, FileNotFoundError)
    assert "was deleted while open" in str(e.value)
    w.close()  # nothing is raised twice
    assert reader.list(tmp_path) == {"run": {"k": [2]}}


def test_reused_buffers_then_a_new_size_over_the_bound(tmp_path):
    """A step that reuses one buffer, then needs room for a new size: idle ones are dropped."""

    def k(mib: float) -> np.ndarray:
        return RNG.random((1, 1, 1, int(mib * (1 << 18))), np.float32)

    a, b, c = k(1), k(1.5), k(2)
    with tb_convfilters.Writer(tmp_path / "run", max_queue_mb=4) as w:
        w.kernel("a", a, 0)
        w.kernel("b", b, 0)
        w.flush()  # both buffers idle
        w.kernel("a", a, 1)  # takes a's
        w.kernel("c", c, 1)  # over the bound with b's idle one: b's is dropped
        w.kernel("b", b, 2)
    for tag, step, data in (("a", 1, a), ("c", 1, c), ("b", 2, b)):
        assert reader.read(tmp_path, "run", tag, step).tobytes() == data.tobytes()


def test_interpreter_exit_writes_large_records_still_queued(tmp_path):
    """At exit the stats worker pool is already shut down; the last records still go out."""
    subprocess.run(
        _script(
            f"""
            import numpy as np, tb_convfilters
            w = tb_convfilters.Writer({str(tmp_path / "run")!r})
            for step in range(3):
                w.kernel("k", np.full((3, 3, 256, 256), step, np.float32), step)
            """
        ),
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "error"},
        check=True,
    )
    assert reader.list(tmp_path)["run"]["k"] == [0, 1, 2]
    assert (reader.read(tmp_path, "run", "k", 2) == 2).all()


def test_queue_bound_is_checked():
    with pytest.raises(ValueError, match=r"max_queue_mb=0 must be a positive number of MiB"):
        tb_convfilters.Writer("unused", max_queue_mb=0)


def _records(path: Path) -> tuple[int, int]:
    """(complete records with good CRCs, bytes after them) of an event file."""
    data = path.read_bytes()
    offset, count = 0, 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        end = offset + 12 + length + 4
        if end > len(data):
            break
        body = data[offset + 12 : offset + 12 + length]
        (crc,) = struct.unpack_from("<I", data, offset + 12 + length)
        assert crc == events._masked_crc(crc32c.crc32c(body)), f"corrupt record {count}"
        offset, count = end, count + 1
    return count, len(data) - offset


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def test_sigkill_mid_run_leaves_only_a_torn_tail(tmp_path):
    proc = subprocess.Popen(
        _script(
            f"""
            import numpy as np, tb_convfilters
            w = tb_convfilters.Writer({str(tmp_path / "run")!r})
            for step in range(10**6):
                data = np.random.default_rng(step).standard_normal((3, 3, 512, 512), np.float32)
                w.kernel("k", data, step)
            """
        ),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for(lambda: len(reader.list(tmp_path).get("run", {}).get("k", [])) >= 3, 120)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (path,) = (tmp_path / "run").iterdir()
    complete, tail = _records(path)
    assert complete >= 4  # the file's header and three steps or more
    steps = reader.list(tmp_path)["run"]["k"]
    assert steps == list(range(complete - 1))
    for step in steps:
        want = np.random.default_rng(step).standard_normal((3, 3, 512, 512), np.float32)
        assert reader.read(tmp_path, "run", "k", step).tobytes() == want.tobytes()
    assert tail < 9.5e6  # at most part of one record


def test_forked_child_never_writes_its_parents_queue(tmp_path):
    done = subprocess.run(
        _script(
            f"""
            import os, time, numpy as np, tb_convfilters
            from tb_convfilters._writing import writer
            write_now = writer.Writer._write_now
            def slow(self, *args):
                time.sleep(0.2)
                return write_now(self, *args)
            writer.Writer._write_now = slow
            w = tb_convfilters.Writer({str(tmp_path / "run")!r})
            for step in range(5):
                w.kernel("k", np.full((3, 3, 4, 8), step, np.float32), step)
            pid = os.fork()  # while the parent's queue holds records
            if pid == 0:
                assert w.closed
                try:
                    w.kernel("k", np.zeros((3, 3, 4, 8), np.float32), 99)
                except ValueError as e:
                    assert "forked child" in str(e), e
                else:
                    raise AssertionError("the child wrote")
                w.flush()
                w.close()
                raise SystemExit(0)  # a normal exit: atexit handlers run in the child too
            _, status = os.waitpid(pid, 0)
            assert status == 0, status
            w.kernel("k", np.full((3, 3, 4, 8), 5, np.float32), 5)
            """
        ),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    (path,) = (tmp_path / "run").iterdir()
    assert _records(path) == (7, 0)  # the header and each step once: nothing doubled or torn
    assert reader.list(tmp_path) == {"run": {"k": list(range(6))}}
    for step in range(6):
        assert (reader.read(tmp_path, "run", "k", step) == step).all()


@pytest.mark.parametrize("blocking", [False, True])
def test_a_step_is_in_the_file_without_flush(tmp_path, blocking):
    """TensorBoard sees the newest step within a second or two, though nobody flushes."""
    w = tb_convfilters.Writer(tmp_path / "run", blocking=blocking)
    try:
        for step in range(3):
            w.kernel("k", KERNEL + step, step)
            found = wait_for(
                lambda s=step: s in reader.list(tmp_path).get("run", {}).get("k", []),
                timeout=2,
                interval=0.05,
                what=f"step {step} in the file",
            )
            assert found
        assert reader.read(tmp_path, "run", "k", 2).tobytes() == (KERNEL + 2).tobytes()
    finally:
        w.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_writer_threads_yield_to_training_threads(tmp_path):
    from tb_convfilters._record import parallel
    from tb_convfilters._writing import copy_queue

    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with tb_convfilters.Writer(tmp_path / "run") as w:
        w.kernel("big", BIG, 0)  # large enough for the stats helper thread
        wait_for(lambda: w._queue._done == 1)  # written by the thread (`flush` would write it)
        threads = [t for t in threading.enumerate() if t.name == copy_queue.THREAD_NAME]
        assert threads  # (other tests' idle writer threads may still be there too)
        for thread in threads:
            nice = os.getpriority(os.PRIO_PROCESS, thread.native_id)
            assert nice == max(copy_queue.NICE, ours)
        assert nice in parallel._pools  # its helper runs at the same priority
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == ours  # not this one


def _fail_first_upload(monkeypatch) -> list[str]:
    """Makes the first upload of an event file fail; returns the URLs uploads were tried to."""
    pytest.importorskip("fsspec")
    from tb_convfilters._record import files

    upload, calls = files.upload, []

    def flaky(url, data):
        calls.append(url)
        if len(calls) == 1:
            raise ConnectionError("the object store is down")
        upload(url, data)

    monkeypatch.setattr(files, "upload", flaky)
    return calls


def test_failed_upload_keeps_the_records_for_the_next_flush(monkeypatch):
    calls = _fail_first_upload(monkeypatch)
    url = f"memory://bg-upload-{os.getpid()}/run"
    with tb_convfilters.Writer(url) as w:
        w.kernel("k", KERNEL, 0)
        with pytest.raises(tb_convfilters.WriterError, match=r"could not upload .*tag 'k' step 0"):
            w.flush()
        w.kernel("k", KERNEL + 1, 1)
    assert len(calls) == 2  # the retry uploaded both records in one file
    assert reader.list(url.rsplit("/", 1)[0]) == {"run": {"k": [0, 1]}}
    assert reader.read(url.rsplit("/", 1)[0], "run", "k", 0).tobytes() == KERNEL.tobytes()


def test_summary_writer_flush_and_close_wait_for_our_records(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter

    from tb_convfilters.torch import log_kernels

    _slow_writes(monkeypatch, 0.3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    summary_writer = SummaryWriter(str(tmp_path / "exp"))
    log_kernels(summary_writer, model, 0)
    summary_writer.flush()
    assert reader.list(tmp_path)["exp"]["0/weight"] == [0]
    log_kernels(summary_writer, model, 1)
    summary_writer.close()
    assert reader.list(tmp_path)["exp"]["0/weight"] == [0, 1]


def test_the_call_that_reports_an_earlier_failure_keeps_its_own_record(tmp_path):
    run = tmp_path / "run"
    w = tb_convfilters.Writer(run)
    w.kernel("a", KERNEL, 0)
    w.kernel("b", KERNEL, 0)
    w.flush()
    shutil.rmtree(run)
    w.kernel("a", KERNEL, 1)  # fails in the background: its file is gone
    w._queue.wait()
    with pytest.raises(tb_convfilters.WriterError, match=r"tag 'a' step 1") as e:
        w.kernel("b", KERNEL + 1, 1)  # healthy: it goes to a new file all the same
    assert (e.value.tag, e.value.step) == ("a", 1)
    for step in (2, 3):
        w.kernel("a", KERNEL, step)
        w.kernel("b", KERNEL, step)
    w.close()
    assert reader.list(tmp_path) == {"run": {"a": [2, 3], "b": [1, 2, 3]}}
    assert reader.read(tmp_path, "run", "b", 1).tobytes() == (KERNEL + 1).tobytes()


def test_later_failures_are_named_with_the_first(tmp_path, monkeypatch):
    monkeypatch.setattr(copy_queue, "QUIET_SECONDS", 60.0)  # nothing is written before close
    monkeypatch.setattr(copy_queue, "MAX_DELAY", 60.0)
    run = tmp_path / "run"
    w = tb_convfilters.Writer(run)
    shutil.rmtree(run)
    run.write_bytes(b"")  # a file where the run directory was: it cannot be made again
    for tag in ("a", "b", "c"):
        w.kernel(tag, KERNEL, 1)
    with pytest.raises(
        tb_convfilters.WriterError,
        match=r"tag 'a' step 1: FileNotFoundError.*; later ones failed too: 'b' step 1, "
        r"'c' step 1$",
    ):
        w.close()


def _run_and_read(tmp_path: Path, code: str) -> dict:
    subprocess.run(
        _script(code),
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "error"},
        check=True,
        timeout=120,
    )
    return reader.list(tmp_path)


@pytest.mark.parametrize("url", [False, True])
@pytest.mark.parametrize("blocking", [False, True])
def test_a_writer_dropped_without_close_has_its_records_on_disk_at_exit(tmp_path, url, blocking):
    pytest.importorskip("fsspec")
    logdir = ("file://" if url else "") + str(tmp_path / "run")
    listing = _run_and_read(
        tmp_path,
        f"""
        import gc, time
        import numpy as np, tb_convfilters
        from tb_convfilters._writing import writer

        def log():
            w = tb_convfilters.Writer({logdir!r}, blocking={blocking})
            w.kernel("k", np.ones((3, 3, 2, 4), np.float32), 0)

        log()
        start = time.monotonic()
        while writer._live:  # until the record is written and the Writer collected
            assert time.monotonic() - start < 60
            time.sleep(0.05)
            gc.collect()
        """,
    )
    assert listing == {"run": {"k": [0]}}


def test_a_dropped_writer_still_queued_at_exit_and_one_collected_before(tmp_path):
    pytest.importorskip("fsspec")
    listing = _run_and_read(
        tmp_path,
        f"""
        import numpy as np, tb_convfilters

        import time, weakref
        import numpy as np, tb_convfilters

        a = tb_convfilters.Writer("file://" + {str(tmp_path / "a")!r})
        a.kernel("k", np.ones((3, 3, 2, 4), np.float32), 0)
        dropped = weakref.ref(a)
        del a  # collected once its record is written, before exit
        start = time.monotonic()
        while dropped() is not None:
            assert time.monotonic() - start < 60
            time.sleep(0.05)
        b = tb_convfilters.Writer("file://" + {str(tmp_path / "b")!r})
        b.kernel("k", np.ones((3, 3, 2, 4), np.float32), 1)  # still queued at exit
        """,
    )
    assert listing == {"a": {"k": [0]}, "b": {"k": [1]}}


@pytest.mark.parametrize("blocking", [False, True])
def test_a_failed_upload_in_close_is_retried_by_the_next_close_or_flush(monkeypatch, blocking):
    calls = _fail_first_upload(monkeypatch)
    root = f"memory://close-upload-{os.getpid()}-{blocking}"
    for retry in ("close", "flush"):
        calls.clear()
        w = tb_convfilters.Writer(f"{root}/{retry}", blocking=blocking)
        w.kernel("k", KERNEL, 0)
        with pytest.raises(tb_convfilters.WriterError, match=r"could not upload .*tag 'k' step 0"):
            w.close()
        assert w.closed
        with pytest.raises(ValueError, match="is closed"):
            w.kernel("k", KERNEL, 1)
        getattr(w, retry)()  # uploads what the failed close kept
        w.close()  # nothing left: no upload
        assert len(calls) == 2
    assert reader.list(root) == {"close": {"k": [0]}, "flush": {"k": [0]}}
    assert reader.read(root, "close", "k", 0).tobytes() == KERNEL.tobytes()


def test_close_does_the_queued_work_on_the_calling_thread(tmp_path, monkeypatch):
    """A caller that waits writes what the low-priority thread has not started itself."""
    monkeypatch.setattr(copy_queue, "QUIET_SECONDS", 60.0)  # the thread would wait for calls to end
    monkeypatch.setattr(copy_queue, "MAX_DELAY", 60.0)
    threads = []
    write_now = writer.Writer._write_now

    def spy(self, *args, **kwargs):
        threads.append(threading.current_thread())
        return write_now(self, *args, **kwargs)

    monkeypatch.setattr(writer.Writer, "_write_now", spy)
    w = tb_convfilters.Writer(tmp_path / "run")
    for step in range(3):
        w.kernel("k", KERNEL + step, step)
    start = time.monotonic()
    w.close()
    assert time.monotonic() - start < 5
    assert threads == [threading.current_thread()] * 3
    assert reader.list(tmp_path) == {"run": {"k": [0, 1, 2]}}
