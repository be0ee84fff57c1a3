"""Demo: train a small Keras CNN on synthetic oriented-stripe images and log its filters.

Two runs (two learning rates) land in ``LOGDIR/<run>/train`` beside the stock
TensorBoard callback's scalars, so the Filters tab can compare them. Logged every
epoch: every conv kernel and its activations (the maps of four images; how often
each channel fires, over 512, enough for the filter doctor's dead verdict); every
other epoch: conv2's activation-maximization patterns and their projections.
Runs in about a minute on 2 CPU cores; no downloads.

    python demo/train.py --logdir demo/logs
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tb_convfilters.keras import FiltersCallback  # noqa: E402

ANGLES = (0.0, 45.0, 90.0, 135.0)  # one class per stripe orientation


def stripes(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` noisy grey images of stripes at one of four orientations, and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(ANGLES), n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = np.deg2rad(np.array(ANGLES, dtype=np.float32))[labels][:, None, None]
    freq = rng.uniform(0.25, 0.6, n).astype(np.float32)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
    images = np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    images += rng.normal(0, 0.3, images.shape).astype(np.float32)
    return images[..., None].astype(np.float32), labels


def build_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            keras.layers.Conv2D(16, 5, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv3"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(ANGLES), name="logits"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="demo/logs")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    x, y = stripes(1024)
    for run, lr in (("lr_1e-3", 1e-3), ("lr_1e-2", 1e-2)):
        keras.utils.set_random_seed(0)
        model = build_model()
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        run_dir = os.path.join(args.logdir, run)
        history = model.fit(
            x,
            y,
            epochs=args.epochs,
            batch_size=64,
            verbose=0,
            callbacks=[
                keras.callbacks.TensorBoard(run_dir),
                FiltersCallback(
                    run_dir,
                    sample_inputs=x[:512],  # firing judged on 512 inputs (doctor: >= 256)
                    max_samples=4,  # maps stored for 4 of them
                    patterns=["conv2"],
                    patterns_every_n_epochs=2,
                    projection_inputs=x[:2],
                    patterns_max_filters=16,
                    patterns_options={"steps": 20},
                ),
            ],
        )
        print(f"{run}: accuracy {history.history['accuracy'][-1]:.2f} -> {run_dir}")


if __name__ == "__main__":
    main()
