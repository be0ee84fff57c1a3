"""Dataset examples: their cost during training and in storage.

``examples.callback_overhead``: ``model.fit`` with ``FiltersCallback(log_dir,
sample_inputs=x, examples=9)`` (512 probe inputs) against the same callback with
``examples=0``, interleaved from the same initial weights, median over rounds of the
paired ratio (as the training figure). Skipped with a message while the callback has
no ``examples=`` knob.

``examples.storage_per_step``: the bytes one step of a 512-channel layer's examples adds
to the event file (written by the real Writer), against ``512 x k x (4 + 4 + 4 x spatial
axes)``; also reported: the probe inputs (once per digest), the maps kept when the
receptive field is unknown, and what float16 crops of a 64x64 field would cost per step
if they were stored instead of cut from the inputs stored once.
"""

from __future__ import annotations

import glob
import inspect
import os

import numpy as np

from benchmarks.common import Result, Timer, fmt_ms, fresh, log, scratch_dir

CHANNELS = 512
K = 9
PROBE = 512


def _event_bytes(logdir: str) -> int:
    return sum(
        os.path.getsize(p)
        for p in glob.glob(os.path.join(logdir, "**", "*"), recursive=True)
        if os.path.isfile(p)
    )


def storage(root: str) -> list[Result]:
    from tb_convfilters import ReceptiveField, Writer
    from tb_convfilters._record.examples import rank

    rng = np.random.default_rng(0)
    x = rng.standard_normal((PROBE, 64, 64, 3)).astype(np.float32)  # the probe inputs
    a = rng.standard_normal((PROBE, 4, 4, CHANNELS)).astype(np.float32)  # a layer's maps
    field = ReceptiveField((-24, -24), (16, 16), (64, 64))
    known = rank(a, "NHWC", K, keep_maps=False)
    unknown = rank(a, "NHWC", K, keep_maps=True)
    logdir = os.path.join(root, "storage")
    sizes = []
    with Writer(logdir) as w:
        for step, found, f in ((1, known, field), (2, known, field), (3, unknown, None)):
            w.write_examples(
                "conv/act", found, step, layout="NHWC", field=f, inputs=x, input_layout="NHWC"
            )
            w.flush()
            sizes.append(_event_bytes(logdir))
    per_step = sizes[1] - sizes[0]
    inputs_once = sizes[0] - per_step
    with_maps = sizes[2] - sizes[1]
    formula = CHANNELS * K * (4 + 4 + 4 * 2)
    crops_f16 = CHANNELS * K * 64 * 64 * 3 * 2
    log(
        f"per step {per_step} B (formula {formula} B), with maps {with_maps} B, probe inputs "
        f"once {inputs_once} B, float16 crops per step would be {crops_f16} B"
    )
    extra = {
        "per_step_bytes": per_step,
        "formula_bytes": formula,
        "unknown_field_bytes": with_maps,
        "inputs_once_bytes": inputs_once,
        "crops_float16_bytes": crops_f16,
    }
    return [
        Result(
            "examples.storage_per_step",
            per_step / formula,
            "<= 1.10",
            f"{CHANNELS} channels x {K} examples: {per_step} B per step in the event file vs "
            f"{formula} B of arrays; unknown field (maps 4x4 kept) {with_maps} B; the "
            f"{PROBE} probe inputs (64x64x3 float32) {inputs_once} B once per digest",
            extra,
        ),
        Result(
            "examples.crops_if_stored",
            crops_f16 / per_step,
            None,
            f"float16 crops of a 64x64x3 field stored per step would be {crops_f16} B, "
            f"{crops_f16 / per_step:.0f}x the examples as stored (crops are cut when read)",
            extra,
        ),
    ]


def overhead(root: str, quick: bool) -> list[Result]:
    from benchmarks.training import filters_callback, small_cnn

    try:
        from tb_convfilters.keras import FiltersCallback
    except ImportError as e:
        return [Result("examples.callback_overhead", None, None, f"skipped: {e}")]
    if "examples" not in inspect.signature(FiltersCallback).parameters:
        msg = "skipped: FiltersCallback has no examples= knob yet"
        log(msg)
        return [Result("examples.callback_overhead", None, None, msg)]
    model = small_cnn()
    initial = model.get_weights()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024 if quick else 2048, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    probe = x[:PROBE]
    epochs = 2 if quick else 3
    rounds = 3 if quick else 9
    logs = os.path.join(root, "logs")

    def fit(k: int):
        def fn() -> None:
            cb, _ = filters_callback(logs, sample_inputs=probe, examples=k)
            model.set_weights(initial)
            model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[cb])

        return fn

    timer = Timer(rounds)
    timer.add("fit + callback examples=0", fit(0), lambda: fresh(logs))
    timer.add(f"fit + callback examples={K}", fit(K), lambda: fresh(logs))
    best = timer.run(log)
    ours, theirs = best[f"fit + callback examples={K}"], best["fit + callback examples=0"]
    return [
        Result(
            "examples.callback_overhead",
            timer.paired_median(f"fit + callback examples={K}", "fit + callback examples=0"),
            "<= 1.10",
            f"fit with FiltersCallback(sample_inputs={PROBE} inputs, examples={K}) vs examples=0, "
            f"median of {rounds} paired rounds ({epochs} epochs; best {fmt_ms(ours)} vs "
            f"{fmt_ms(theirs)})",
            {"rounds": rounds, "epochs": epochs},
        )
    ]


def run(quick: bool) -> list[Result]:
    with scratch_dir("examples") as root:
        return storage(root) + overhead(root, quick)
