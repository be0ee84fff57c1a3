"""Figure 4, training overhead: ``FiltersCallback`` during ``model.fit``.

A small CNN (3 conv layers, 28x28x1 inputs, synthetic data) is fitted for a
few epochs without the callback, with it every epoch and with it every 10
batches, interleaved, from the same initial weights; the first fit of each
kind (tracing) is warm-up. A fit's time varies by +-25 % between rounds on a
shared 2-core machine, far more than the callback costs, so the ratio is the
median over rounds of (with / without) in the same round. The time inside the
callback is measured by wrapping only the hooks the callback has: a wrapper on
a batch hook it does not have would itself be a batch hook (on JAX and torch, Keras then stops
dispatching batch callbacks asynchronously).
"""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks.common import Result, Timer, fmt_ms, fresh, log, scratch_dir


def small_cnn():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def filters_callback(log_dir: str, **options):
    """Our callback, or (while it is missing) a summary.kernel-per-layer equivalent."""
    try:
        from tb_convfilters.keras import FiltersCallback

        return FiltersCallback(log_dir, **options), "FiltersCallback"
    except ImportError:
        import keras
        import tensorflow as tf

        from tb_convfilters import summary

        class KernelCallback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                with tf.summary.create_file_writer(log_dir).as_default():
                    for layer in self.model.layers:
                        if isinstance(layer, keras.layers.Conv2D):
                            summary.kernel(f"{layer.name}/kernel", layer.kernel, step=epoch)

        return KernelCallback(), "summary.kernel callback"


def run(quick: bool) -> list[Result]:
    model = small_cnn()
    initial = model.get_weights()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024 if quick else 2048, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    epochs = 2 if quick else 3
    rounds = 3 if quick else 9
    params = sum(int(np.prod(w.shape)) for w in initial)
    log(f"small CNN, {params} weights, {len(x)} samples, {epochs} epochs per fit")

    with scratch_dir("training") as root:
        logs = os.path.join(root, "logs")
        label = ""

        def fit(callbacks) -> None:
            model.set_weights(initial)
            model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks)

        hooks: dict[str, list[list[float]]] = {}  # per fit: [seconds inside its hooks]

        def with_callback(key: str, **options):
            def fn() -> None:
                nonlocal label
                cb, label = filters_callback(logs, **options)
                hooks.setdefault(key, []).append(_time_hooks(cb))
                fit([cb])

            return fn

        timer = Timer(rounds)
        timer.add("fit", lambda: fit([]))
        timer.add("fit + callback", with_callback("epoch"), lambda: fresh(logs))
        timer.add(
            "fit + callback every 10 batches",
            with_callback("batches", every_n_batches=10),
            lambda: fresh(logs),
        )
        best = timer.run(log)
    plain = best["fit"]
    n = f"median of {rounds} paired rounds"
    results = []
    for key, name, contender, every, target in (
        ("epoch", "training.callback_overhead", "fit + callback", "every epoch", "<= 1.03"),
        (
            "batches",
            "training.callback_every_10_batches_overhead",
            "fit + callback every 10 batches",
            "every 10 batches",
            "<= 1.10",
        ),
    ):
        ours = best[contender]
        inside = min(total for (total,) in hooks[key][-rounds:])
        results.append(
            Result(
                name,
                timer.paired_median(contender, "fit"),
                target,
                f"fit with {label} {every} vs without, {n} ({epochs} epochs; best "
                f"{fmt_ms(ours)} vs {fmt_ms(plain)}); time inside the callback "
                f"{fmt_ms(inside)} = {inside / plain:.1%} of the fit",
                {"rounds": rounds, "epochs": epochs, "callback_ms": round(inside * 1e3, 2)},
            )
        )
    return results


def _time_hooks(callback) -> list[float]:
    """Wraps the hooks `callback` has to add up their wall time in the returned ``[total]``."""
    total = [0.0]
    for name in ("on_train_begin", "on_train_batch_end", "on_epoch_end", "on_train_end"):
        hook = getattr(callback, name)
        if getattr(hook, "_is_default", False):  # Keras' mark of a hook not overridden
            continue

        def timed(*args, _hook=hook, **kwargs):
            start = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                total[0] += time.perf_counter() - start

        setattr(callback, name, timed)
    return total
