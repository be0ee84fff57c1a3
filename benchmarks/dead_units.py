"""Precision and recall of the doctor's dead rule against ground truth (issue 21).

    python -m benchmarks.dead_units [--out docs/dead_units.md] [--quick]

Four seeded trainings: the demo's two runs (``demo/train.py``: stripes, lr 1e-3 and
1e-2) and a Keras and a PyTorch CNN on scikit-learn's digits with a learning rate
high enough to kill units. Each logs activations through the real callbacks
(``FiltersCallback`` / ``log_sample_activations``) on the first n training inputs,
for several n at once (one run directory per n). Ground truth comes from the final
model on *all* training inputs: a unit is dead when it is > 0 on none of them.

For each training and n the table counts the doctor's activation findings with the
input threshold lowered to 1 (what the rule says on n inputs) and at the default
(``dead``, ``suspected_dead``): findings, true (the unit is dead), false (it fires),
false on units firing on >= 1 % of the inputs, the highest firing rate among the false
ones, and missed (dead units not found).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tb_convfilters import doctor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
INPUTS = (4, 8, 16, 32, 64, 128, 256, 512)


def _demo():
    spec = importlib.util.spec_from_file_location("demo_train", ROOT / "demo" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1)
    return (x - x.mean()) / x.std(), digits.target.astype(np.int32)


def _keras_truth(model, x: np.ndarray, tags: dict[str, str]) -> dict[str, np.ndarray]:
    """Per logged layer: the fraction of `x` on which each channel is > 0 somewhere."""
    import keras

    out = {}
    for tag, name in tags.items():
        probe = keras.Model(model.inputs[0], model.get_layer(name).output)
        fired = [
            (keras.ops.convert_to_numpy(probe(x[i : i + 256], training=False)) > 0).any(axis=(1, 2))
            for i in range(0, len(x), 256)
        ]
        out[tag] = np.concatenate(fired).mean(axis=0)
    return out


def _fit_keras(model, x, y, lr: float, batch_size: int, logdir: Path, inputs, epochs: int) -> dict:
    """Fits `model` with one FiltersCallback per n in `inputs`; the truth on all of `x`."""
    import keras

    from tb_convfilters.keras import FiltersCallback

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callbacks = [
        FiltersCallback(logdir / f"n{n:04d}", sample_inputs=x[:n], max_samples=4) for n in inputs
    ]
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks)
    tags = {f"{name}/activation": name for name in ("conv1", "conv2", "conv3")}
    return {"truth": _keras_truth(model, x, tags), "n_train": len(x)}


def train_demo(logdir: Path, run: str, lr: float, inputs: tuple[int, ...], epochs: int) -> dict:
    """The demo's run `run` (same seed, data and model), logged once per n in `inputs`."""
    import keras

    demo = _demo()
    x, y = demo.stripes(1024)
    keras.utils.set_random_seed(0)
    model = demo.build_model()
    return _fit_keras(model, x, y, lr, 64, logdir, inputs, epochs)


def train_keras_digits(logdir: Path, inputs: tuple[int, ...], epochs: int) -> dict:
    import keras

    x, y = _digits()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    return _fit_keras(model, x, y, 0.03, 32, logdir, inputs, epochs)  # lr high enough to kill units


def train_torch_digits(logdir: Path, inputs: tuple[int, ...], epochs: int) -> dict:
    import torch
    from torch import nn

    from tb_convfilters.torch import log_sample_activations

    x_np, y_np = _digits()
    x = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(y_np).long()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)  # high enough to kill units
    relus = {"1": "conv1", "3": "conv2", "6": "conv3"}  # ReLU module -> layer name
    generator = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        model.train()
        for batch in torch.randperm(len(x), generator=generator).split(32):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for n in inputs:
            log_sample_activations(
                logdir / f"n{n:04d}", model, epoch, x[:n], modules=list(relus), max_samples=4
            )
    model.eval()
    truth = {}
    with torch.no_grad():
        out = x
        for i, module in enumerate(model):
            out = module(out)
            if str(i) in relus:
                truth[f"{i}/activation"] = (out > 0).flatten(2).any(2).float().mean(0).numpy()
    return {"truth": truth, "n_train": len(x)}


def score(logdir: Path, truth: dict[str, np.ndarray], n_train: int, inputs) -> list[dict]:
    """One row per n: the rule on n inputs (threshold 1) and at the default threshold."""
    rows = []
    dead_units = {(tag, int(f)) for tag, frac in truth.items() for f in np.flatnonzero(frac == 0)}
    rare = 0.01
    for n in inputs:
        run_dir = logdir / f"n{n:04d}"
        verdicts: dict[str, set] = defaultdict(set)
        for label, t in (("rule", doctor.Thresholds(dead_min_inputs=1)), ("default", None)):
            for f in doctor.diagnose(run_dir, thresholds=t):
                if f.tag in truth and f.problem in ("dead", "suspected_dead"):
                    verdicts[f"{label}:{f.problem}"].add((f.tag, int(f.filter)))
        found = verdicts["rule:dead"]
        false = found - dead_units
        row = {
            "n": n,
            "units": sum(len(v) for v in truth.values()),
            "dead_units": len(dead_units),
            "findings": len(found),
            "true": len(found & dead_units),
            "false": len(false),
            "false_1pct": sum(truth[tag][f] >= rare for tag, f in false),
            "false_max": max((truth[tag][f] for tag, f in false), default=0.0),
            "missed": len(dead_units - found),
            "default_dead": len(verdicts["default:dead"]),
            "default_dead_false": len(verdicts["default:dead"] - dead_units),
            "default_suspected": len(verdicts["default:suspected_dead"]),
            "n_train": n_train,
        }
        rows.append(row)
    return rows


def markdown(results: dict[str, list[dict]]) -> str:
    head = (
        "| training | units (dead) | inputs n | rule: findings | true | false | "
        "false, fires >= 1 % | most firing false | missed | default: dead (false) | "
        "default: suspected |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, rows in results.items():
        for r in rows:
            lines.append(
                f"| {name} | {r['units']} ({r['dead_units']}) | {r['n']} | {r['findings']} | "
                f"{r['true']} | {r['false']} | {r['false_1pct']} | "
                f"{100 * r['false_max']:.2g} % | {r['missed']} | "
                f"{r['default_dead']} ({r['default_dead_false']}) | {r['default_suspected']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the markdown table to this file")
    parser.add_argument("--quick", action="store_true", help="fewer epochs, fewer n")
    parser.add_argument("--only", nargs="*", help="trainings to run (default: all)")
    args = parser.parse_args(argv)
    inputs = (4, 64, 512) if args.quick else INPUTS
    epochs = 2 if args.quick else None
    trainings = {
        "demo lr_1e-3": lambda d: train_demo(d, "lr_1e-3", 1e-3, inputs, epochs or 8),
        "demo lr_1e-2": lambda d: train_demo(d, "lr_1e-2", 1e-2, inputs, epochs or 8),
        "Keras digits, Adam 0.03": lambda d: train_keras_digits(d, inputs, epochs or 10),
        "PyTorch digits, Adam 0.03": lambda d: train_torch_digits(d, inputs, epochs or 10),
    }
    results = {}
    with tempfile.TemporaryDirectory(prefix="dead_units_") as tmp:
        for i, (name, train) in enumerate(trainings.items()):
            if args.only and not any(o in name for o in args.only):
                continue
            logdir = Path(tmp) / str(i)
            got = train(logdir)
            results[name] = score(logdir, got["truth"], got["n_train"], inputs)
            print(f"{name}: done", file=sys.stderr, flush=True)
    table = markdown(results)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
