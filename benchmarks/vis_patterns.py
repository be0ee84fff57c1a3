"""Benchmark: activation-maximization patterns and projections of a small CNN.

Times ``vis.filter_patterns`` for 64 filters of a 3-layer CNN at 64 x 64 (30 steps,
one batch) and ``vis.projections`` for 4 inputs x 64 filters; the first call includes
tracing, later calls reuse the traced graph (as a training callback does).

    python benchmarks/vis_patterns.py [--size 64] [--filters 64] [--steps 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tb_convfilters import vis  # noqa: E402


def small_cnn(size: int, filters: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv3"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--inputs", type=int, default=4, help="images for projections")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow CPU threads")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    model = small_cnn(args.size, args.filters)
    images = np.random.default_rng(0).random((args.inputs, args.size, args.size, 3), "f4")
    print(
        f"{args.filters} filters of conv3, {args.size}x{args.size}, {args.steps} steps, "
        f"{args.threads} threads, TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )
    runs = {
        "filter_patterns": lambda: vis.filter_patterns(model, "conv3", steps=args.steps),
        "filter_patterns jitter=2 blur=1": lambda: vis.filter_patterns(
            model, "conv3", steps=args.steps, jitter=2, blur=1.0
        ),
        f"projections guided_backprop ({args.inputs} inputs)": lambda: vis.projections(
            model, "conv3", images
        ),
    }
    for name, fn in runs.items():
        first, *rest = timed(fn, args.repeat)
        best = min(rest) if rest else first
        print(f"{name:45s} first call {first:6.2f} s   later calls {best:6.2f} s")


if __name__ == "__main__":
    main()
