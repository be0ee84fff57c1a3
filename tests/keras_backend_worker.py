"""Keras 3 fit with FiltersCallback on the backend KERAS_BACKEND names (run as a subprocess).

`python keras_backend_worker.py LOGDIR OUTDIR`: fits a small functional conv model for
3 epochs into LOGDIR; writes OUTDIR/result.json (backend, warnings, vis errors) and
OUTDIR/weights.npz (each kernel at each epoch end, the final kernels, activations).
"""

import json
import sys
import warnings
from pathlib import Path

import keras
import numpy as np

from tb_convfilters import vis
from tb_convfilters.keras import FiltersCallback


def main(logdir: str, outdir: Path) -> None:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    y = keras.layers.DepthwiseConv2D(3, name="dw")(y)
    y = keras.layers.SeparableConv2D(2, 1, name="sep")(y)
    outputs = keras.layers.Dense(2, name="dense")(keras.layers.GlobalAveragePooling2D()(y))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 8, 8, 3)).astype("float32")
    target = rng.standard_normal((16, 2)).astype("float32")
    parts = {"conv/kernel": ("conv", "kernel"), "dw/kernel": ("dw", "kernel"),
             "sep/depthwise": ("sep", "depthwise_kernel"),
             "sep/pointwise": ("sep", "pointwise_kernel")}
    saved = {}

    def value(tag):
        layer, attr = parts[tag]
        return keras.ops.convert_to_numpy(getattr(model.get_layer(layer), attr)).copy()

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for tag in parts:
                saved[f"{epoch}:{tag}"] = value(tag)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, target, epochs=3, batch_size=4, verbose=0,
                  callbacks=[FiltersCallback(logdir, sample_inputs=x[:4], budget_mb=1e-4),
                             Snapshot()])
    for tag in parts:
        saved[f"final:{tag}"] = value(tag)
    probe = keras.Model(inputs, model.get_layer("conv").output)
    saved["final:conv/activation"] = keras.ops.convert_to_numpy(probe(x[:4], training=False))
    errors = {}
    try:
        vis.filter_patterns(model, "conv")
    except Exception as e:
        errors["filter_patterns"] = f"{type(e).__name__}: {e}"
    try:
        model.fit(x, target, epochs=1, verbose=0,
                  callbacks=[FiltersCallback(logdir + "_patterns", patterns=["conv"])])
    except Exception as e:
        errors["patterns"] = f"{type(e).__name__}: {e}"
    np.savez(outdir / "weights.npz", **saved)
    (outdir / "result.json").write_text(json.dumps({
        "backend": keras.backend.backend(),
        "warnings": [str(w.message) for w in caught],
        "errors": errors,
    }))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
