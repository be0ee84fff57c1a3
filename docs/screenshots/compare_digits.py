"""Two seeds of a small CNN on scikit-learn's digits, compared: docs/compare.md's figures.

    .venv/bin/python docs/screenshots/compare_digits.py [LOGDIR]

Trains the same Keras CNN twice (seeds 0 and 1) on ``sklearn.datasets.load_digits``
(no download), logging kernels and activations on the same 64 test digits with
``FiltersCallback``; prints ``tb-convfilters compare`` (text and JSON), then starts
``tensorboard`` and saves the aligned view (compare_aligned.png) and the Similarity
view (compare_similarity.png) next to this file. Keeps the logs in LOGDIR if given
(and trains nothing when LOGDIR already holds them).
"""

from __future__ import annotations

import sys
import tempfile
import urllib.parse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))
from support import CHROMIUM, CHROMIUM_ARGS, plugin_frame, tensorboard  # noqa: E402

EPOCHS = 12


def train(logdir: Path, seed: int, x: np.ndarray, y: np.ndarray, samples: np.ndarray) -> float:
    import keras

    from tb_convfilters.keras import FiltersCallback

    keras.utils.set_random_seed(seed)
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            L.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            L.MaxPooling2D(2, name="pool"),
            L.Conv2D(32, 3, padding="same", activation="relu", name="conv3"),
            L.Flatten(name="flatten"),
            L.Dense(10, name="head"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callback = FiltersCallback(
        logdir / f"seed{seed}",
        sample_inputs=samples,
        max_samples=len(samples),  # CKA is computed on the stored maps
        layers=[L.Conv2D, L.Dense],
    )
    model.fit(x[:-300], y[:-300], epochs=EPOCHS, batch_size=32, verbose=0, callbacks=[callback])
    return float(model.evaluate(x[-300:], y[-300:], verbose=0)[1])


def main(keep: str | None) -> None:
    from playwright.sync_api import sync_playwright
    from sklearn.datasets import load_digits

    from tb_convfilters import cli

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    samples = x[-64:]  # the same held-out digits for both seeds: CKA needs the same inputs
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(keep) if keep else Path(tmp) / "logs"
        for seed in (0, 1):
            if not (logdir / f"seed{seed}").exists():
                print(f"seed {seed}: test accuracy {train(logdir, seed, x, y, samples):.3f}")
        args = ["compare", str(logdir), "--run", "seed1/train", "--base", "seed0/train"]
        print("$ tb-convfilters compare logs --run seed1/train --base seed0/train")
        cli.main(args)
        print("$ tb-convfilters compare logs --run seed1/train --base seed0/train --json")
        cli.main([*args, "--json"])
        with tensorboard(logdir, load_fast="false") as base, sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1400, "height": 760})
            state = "run=seed0/train&tag=conv1/kernel&cmp=seed1/train&align=1&base=seed0/train"
            page.goto(f"{base}/#convfilters&cf=" + urllib.parse.quote(state, safe=""))
            frame = plugin_frame(page)
            frame.wait_for_selector("canvas.grid-overlay[data-row-notes]", timeout=60000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(HERE / "compare_aligned.png"))
            print("saved compare_aligned")
            frame.locator("#similarity summary").click()
            frame.wait_for_selector("#similarity td.cka-cell", timeout=60000)
            page.wait_for_timeout(800)
            frame.locator("#similarity").screenshot(path=str(HERE / "compare_similarity.png"))
            print("saved compare_similarity")
            browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
