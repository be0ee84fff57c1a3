"""Figure 1, write: all 53 conv kernels of ResNet-50 (94 MB float32) as one step.

Floor: ``np.save`` of the same arrays (53 files). Also timed: raw
``tf.summary.write`` of the same variables, the stock path (min-max each kernel
into one PNG grid with ``tf.summary.image``), and TensorBoard's own Python event
writer (what ``torch.utils.tensorboard`` uses; one round, full runs only).
Ours: ``summary.kernel`` in a TF writer, ``tb_convfilters.Writer``, the Keras
``FiltersCallback`` and the PyTorch ``log_kernels``, at float32 and float16.

End to end (above) is the whole cost: a fresh Writer per round, closed at the
end. The Writer writes in the background, so a training loop waits only for
the *blocked* time: one step's calls returning, with a Writer that lives
across steps (as in training) and is idle when the step starts. The writer's
*throughput* is the input MB of a step over the time from its first call until
``flush()`` returns, against ``np.save`` of the same step in the same round
(to new files kept until the end: an event file grows into new memory each
step, and on a VM fresh memory can cost several times more than reused; the
median of the rounds' ratios).
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from benchmarks.common import Result, Timer, fmt_ms, fresh, log, scratch_dir


def resnet50():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    return model, convs


def torch_model(kernels: dict[str, np.ndarray]):
    """The same kernels in ``nn.Conv2d`` modules (OIHW), or None without PyTorch."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    model = nn.Module()
    for name, k in kernels.items():
        h, w, i, o = k.shape
        conv = nn.Conv2d(i, o, (h, w), bias=False, device="meta")
        conv.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1))))
        model.add_module(name, conv)
    return model


def stock_png(tf, name: str, kernel) -> None:
    """What people do today: min-max to [0, 1], tile filters x channels, PNG."""
    t = tf.convert_to_tensor(kernel)
    lo, hi = tf.reduce_min(t), tf.reduce_max(t)
    x = (t - lo) / (hi - lo)
    h, w, i, o = t.shape
    grid = tf.reshape(tf.transpose(x, (3, 0, 2, 1)), (1, o * h, i * w, 1))
    tf.summary.image(name, grid, step=0)


def run(quick: bool) -> list[Result]:
    import tensorflow as tf

    import tb_convfilters
    from tb_convfilters import summary
    from tb_convfilters._record import parallel

    model, convs = resnet50()
    kernels = {layer.name: layer.kernel.numpy() for layer in convs}
    variables = [(layer.name, layer.kernel) for layer in convs]
    total = sum(k.nbytes for k in kernels.values())
    log(f"{len(kernels)} conv kernels of ResNet-50, {total / 1e6:.1f} MB float32")
    tmodel = torch_model(kernels)
    try:
        from tb_convfilters.keras import FiltersCallback
    except ImportError:
        FiltersCallback = None

    rounds = 2 if quick else 5
    timer = Timer(rounds)
    with scratch_dir("write") as root:
        out = os.path.join(root, "out")
        state: dict = {}

        def clear() -> None:
            fresh(out)

        def np_save() -> None:
            for name, k in kernels.items():
                with open(os.path.join(out, f"{name}.npy"), "wb") as f:
                    np.save(f, k)

        def tf_open() -> None:
            clear()
            state["tf"] = tf.summary.create_file_writer(out)

        def tf_close() -> None:
            state.pop("tf").close()

        def tf_write() -> None:
            with state["tf"].as_default():
                for name, v in variables:
                    tf.summary.write(name, v, step=0)
            state["tf"].flush()

        def tf_kernel() -> None:
            with state["tf"].as_default():
                for name, v in variables:
                    summary.kernel(name, v, step=0)
            state["tf"].flush()

        def tf_stock() -> None:
            with state["tf"].as_default():
                for name, v in variables:
                    stock_png(tf, name, v)
            state["tf"].flush()

        def writer(dtype: str | None, blocking: bool = False):
            def fn() -> None:
                with tb_convfilters.Writer(out, dtype=dtype, blocking=blocking) as w:
                    for name, k in kernels.items():
                        w.kernel(name, k, step=0)

            return fn

        def callback(dtype: str | None):
            def fn() -> None:
                cb = FiltersCallback(out, dtype=dtype, budget_mb=None)
                cb.set_model(model)
                cb.on_train_begin()
                cb.on_epoch_end(0)
                cb.on_train_end()

            return fn

        def torch_helper(dtype: str | None):
            from tb_convfilters.torch import log_kernels

            def fn() -> None:
                with tb_convfilters.Writer(out) as w:
                    log_kernels(w, tmodel, 0, dtype=dtype, budget_mb=None)

            return fn

        def one_thread(fn):
            """`fn` with stats, CRC and casts on the calling thread only (for comparison)."""

            def wrapped() -> None:
                saved, parallel.PARALLEL_MIN_BYTES = parallel.PARALLEL_MIN_BYTES, 1 << 62
                try:
                    fn()
                finally:
                    parallel.PARALLEL_MIN_BYTES = saved

            return wrapped

        timer.add("np.save", np_save, clear)
        timer.add("tf.summary.write", tf_write, tf_open, tf_close)
        timer.add("summary.kernel (TF)", tf_kernel, tf_open, tf_close)
        timer.add("stock PNG (tf.summary.image)", tf_stock, tf_open, tf_close)
        paths = [("Writer", writer)]
        if FiltersCallback is not None:
            paths.append(("FiltersCallback", callback))
        if tmodel is not None:
            paths.append(("torch log_kernels", torch_helper))
        for label, make in paths:
            timer.add(f"{label} f32", make(None), clear)
            timer.add(f"{label} f16", make("float16"), clear)
        timer.add("Writer f32, one thread", one_thread(writer(None)), clear)
        timer.add("Writer f32, blocking", writer(None, blocking=True), clear)
        best = timer.run(log)

        live = {
            f"{label} {suffix}": (make, dtype)
            for label, make in (
                ("Writer", live_writer),
                ("FiltersCallback", live_callback),
                ("torch log_kernels", live_torch),
            )
            for suffix, dtype in (("f32", None), ("f16", "float16"))
        }
        if FiltersCallback is None:
            live = {k: v for k, v in live.items() if not k.startswith("FiltersCallback")}
        if tmodel is None:
            live = {k: v for k, v in live.items() if not k.startswith("torch")}
        env = {"kernels": kernels, "model": model, "tmodel": tmodel, "cb": FiltersCallback}
        blocked, through = _live_steps(live, env, os.path.join(root, "live"), rounds)

        tb_python = None
        if not quick:
            tb_python = _tensorboard_python_writer(kernels, os.path.join(root, "tbpy"))

    floor, raw = best["np.save"], best["tf.summary.write"]
    stock = best["stock PNG (tf.summary.image)"]
    n = f"best of {rounds}"
    extra = {"best_of": rounds, "mb": round(total / 1e6, 1)}
    results = [
        Result(
            "write.tf_write_vs_np_save",
            raw / floor,
            None,
            f"reference: raw tf.summary.write {fmt_ms(raw)} vs np.save {fmt_ms(floor)} ({n})",
            extra,
        ),
        Result(
            "write.stock_png_vs_np_save",
            stock / floor,
            None,
            f"reference: tf.summary.image PNG grids {fmt_ms(stock)} ({n})",
            extra,
        ),
    ]
    if tb_python is not None:
        results.append(
            Result(
                "write.tensorboard_python_writer_vs_np_save",
                tb_python / floor,
                None,
                f"reference: TensorBoard's EventFileWriter {fmt_ms(tb_python)} "
                f"({total / tb_python / 1e6:.1f} MB/s; one round)",
                {"best_of": 1},
            )
        )
    single = best["Writer f32, one thread"]
    results.append(
        Result(
            "write.writer_f32_one_thread_vs_np_save",
            single / floor,
            None,
            f"reference: Writer float32 with stats and CRC on one thread {fmt_ms(single)} "
            f"(two threads: {fmt_ms(best['Writer f32'])}; {n})",
            extra,
        )
    )
    sync = best["Writer f32, blocking"]
    results.append(
        Result(
            "write.writer_f32_blocking_vs_np_save",
            sync / floor,
            None,
            f"reference: Writer(blocking=True) float32, all in the calling thread {fmt_ms(sync)} "
            f"(in the background, to close(): {fmt_ms(best['Writer f32'])}; {n})",
            extra,
        )
    )
    ours_tf = best["summary.kernel (TF)"]
    results.append(
        Result(
            "write.tf_kernel_vs_tf_write",
            ours_tf / raw,
            "<= 1.1",
            f"summary.kernel {fmt_ms(ours_tf)} vs tf.summary.write {fmt_ms(raw)} ({n})",
            extra,
        )
    )
    stock_ratios = {"summary.kernel (TF)": stock / ours_tf}
    for label, _ in paths:
        for suffix, target in (("f32", "<= 1.0"), ("f16", "<= 0.6")):
            t = best[f"{label} {suffix}"]
            stock_ratios[f"{label} {suffix}"] = stock / t
            key = label.split()[-1].lower().replace("filterscallback", "keras_callback")
            results.append(
                Result(
                    f"write.{key}_{suffix}_vs_np_save",
                    t / floor,
                    target,
                    f"{label} dtype={'float16' if suffix == 'f16' else 'float32'} {fmt_ms(t)} "
                    f"vs np.save {fmt_ms(floor)} ({n})",
                    extra,
                )
            )
    for label, t in blocked.items():
        target = "<= 0.3" if label.startswith("Writer") else "<= 0.35"
        key = label.split()[-2].lower().replace("filterscallback", "keras_callback")
        results.append(
            Result(
                f"write.{key}_{label.split()[-1]}_blocked_vs_np_save",
                t / floor,
                target,
                f"{label}: training blocked {fmt_ms(t)} per step (background writer) vs "
                f"np.save {fmt_ms(floor)} ({n})",
                extra,
            )
        )
    saves = through.pop("np.save")
    paired = f"median of {rounds} rounds, each paired with np.save of the step in that round"
    for label, times in through.items():
        if label.startswith("Writer"):
            t = statistics.median(times)
            results.append(
                Result(
                    f"write.writer_{label.split()[-1]}_throughput_vs_np_save",
                    statistics.median(a / b for a, b in zip(saves, times, strict=True)),
                    ">= 0.6" if label.endswith("f32") else None,
                    f"{label} background writer {total / t / 1e6:.0f} MB/s of input "
                    f"(step to flush() {fmt_ms(t)}) vs np.save "
                    f"{total / statistics.median(saves) / 1e6:.0f} MB/s ({paired}); the best "
                    f"round {fmt_ms(min(times))} against the best np.save above: "
                    f"{floor / min(times):.2f}",
                    {"rounds": rounds, "mb": round(total / 1e6, 1)},
                )
            )
    worst = min(stock_ratios, key=stock_ratios.get)
    results.append(
        Result(
            "write.stock_png_vs_ours",
            stock_ratios[worst],
            ">= 10",
            f"stock PNG / ours, lowest over {len(stock_ratios)} paths ({worst}); "
            + ", ".join(f"{k} {v:.0f}x" for k, v in stock_ratios.items()),
            extra,
        )
    )
    return results


def live_writer(env: dict, path: str, dtype: str | None):
    import tb_convfilters

    w = tb_convfilters.Writer(path, dtype=dtype)

    def step(i: int) -> None:
        for name, k in env["kernels"].items():
            w.kernel(name, k, step=i)

    return step, w.flush, w.close


def live_callback(env: dict, path: str, dtype: str | None):
    cb = env["cb"](path, dtype=dtype, budget_mb=None)
    cb.set_model(env["model"])
    cb.on_train_begin()
    return cb.on_epoch_end, lambda: cb._writer.flush(), cb.on_train_end


def live_torch(env: dict, path: str, dtype: str | None):
    import tb_convfilters
    from tb_convfilters.torch import log_kernels

    w = tb_convfilters.Writer(path)

    def step(i: int) -> None:
        log_kernels(w, env["tmodel"], i, dtype=dtype, budget_mb=None)

    return step, w.flush, w.close


def _live_steps(
    live: dict, env: dict, root: str, rounds: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Best blocked seconds per path, and every round's step-to-flush seconds per path
    and of ``np.save`` (as "np.save"); one live writer each, interleaved."""
    paths = {}
    for i, (label, (make, dtype)) in enumerate(live.items()):
        paths[label] = make(env, os.path.join(root, str(i)), dtype)
    blocked: dict[str, list[float]] = {label: [] for label in paths}
    through: dict[str, list[float]] = {label: [] for label in [*paths, "np.save"]}
    try:
        for r in range(1 + rounds):  # round 0: warm-up (first buffers, thread start)
            saved = os.path.join(root, f"np.save.{r}")
            os.makedirs(saved)
            start = time.perf_counter()
            for name, k in env["kernels"].items():
                with open(os.path.join(saved, f"{name}.npy"), "wb") as f:
                    np.save(f, k)
            if r:
                through["np.save"].append(time.perf_counter() - start)
            for label, (step, flush, _) in paths.items():
                start = time.perf_counter()
                step(r)
                returned = time.perf_counter()
                flush()
                if r:
                    blocked[label].append(returned - start)
                    through[label].append(time.perf_counter() - start)
            if r:
                log(
                    f"blocked, round {r}/{rounds}: "
                    + ", ".join(f"{k} {min(v) * 1e3:.0f} ms" for k, v in blocked.items())
                )
    finally:
        for _, _, close in paths.values():
            close()
    return {k: min(v) for k, v in blocked.items()}, through


def _tensorboard_python_writer(kernels: dict[str, np.ndarray], out: str) -> float:
    """One round of TensorBoard's pure-Python EventFileWriter with our Summary protos."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from tb_convfilters import summary

    fresh(out)
    log("TensorBoard's Python event writer (one round, ~20 s)")
    start = time.perf_counter()
    w = EventFileWriter(out)
    for name, k in kernels.items():
        pb = summary.kernel_pb(name, k)
        w.add_event(event_pb2.Event(step=0, wall_time=time.time(), summary=pb))
    w.close()
    return time.perf_counter() - start
