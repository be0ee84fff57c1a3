"""Firing statistics over many inputs, maps of a few, and the dead rule that reads them
(issue 21: the doctor called units dead from four images)."""

from __future__ import annotations

import numpy as np
import pytest
from support import PREFIX, plugin_client

from tb_convfilters import Writer, cli, doctor, reader
from tb_convfilters._record import encoding
from tb_convfilters._record.firing import FIRING_STATS, Firing
from tb_convfilters._record.record import Record, make_record

RARE, DEAD, BUSY = 0, 1, 2  # channels: fires on 1 input in 50, never, always


def activations(n: int, seed: int = 0) -> np.ndarray:
    """(n, 6, 6, 3): channel RARE is > 0 at one position of inputs 7, 57, 107, ... only."""
    a = -np.random.default_rng(seed).random((n, 6, 6, 3)).astype(np.float32)
    a[7::50, 2, 3, RARE] = 0.5
    a[..., BUSY] *= -1
    return a


def old_format_record(a: np.ndarray) -> Record:
    """A record as written before the firing columns existed (stats = STAT_NAMES)."""
    return Record(
        np.ascontiguousarray(a), encoding.make_header("activation", "NHWC", a.shape, "float32")
    )


def dead_findings(logdir, **thresholds) -> set[tuple]:
    findings = doctor.diagnose(logdir, thresholds=doctor.Thresholds(**thresholds))
    return {(f.run, f.filter, f.problem, f.detail["inputs"]) for f in findings}


def test_four_inputs_made_a_rarely_firing_unit_dead_and_now_only_suspected(tmp_path):
    few = activations(50)[5:9]  # four inputs, one of which (7) fires the rare unit...
    few_quiet = activations(50)[:4]  # ...and four where it stays silent
    with Writer(tmp_path / "old") as w:  # records of the old format, judged by zero_frac
        for step in range(3):
            w.write_record("a", old_format_record(few_quiet), step)
    with Writer(tmp_path / "new") as w:
        for step in range(3):
            w.activation("a", few_quiet, step)
    # The old rule (dead from any number of samples) called the rare unit dead: reproduce
    # it by lowering the input threshold to 4, the demo's sample count.
    assert dead_findings(tmp_path, dead_min_inputs=4) == {
        ("old", RARE, "dead", 4),
        ("old", DEAD, "dead", 4),
        ("new", RARE, "dead", 4),
        ("new", DEAD, "dead", 4),
    }
    # At the default, four inputs are too few: both are only suspected, in either format.
    assert dead_findings(tmp_path) == {
        ("old", RARE, "suspected_dead", 4),
        ("old", DEAD, "suspected_dead", 4),
        ("new", RARE, "suspected_dead", 4),
        ("new", DEAD, "suspected_dead", 4),
    }
    with Writer(tmp_path / "lucky") as w:
        w.activation("a", few, 0)
    assert ("lucky", RARE, "suspected_dead", 4) not in dead_findings(tmp_path)


def test_a_unit_firing_on_1_input_in_50_is_not_dead_on_enough_inputs(tmp_path):
    n = doctor.DEAD_MIN_INPUTS + 44
    with Writer(tmp_path / "run") as w:
        for step in range(3):
            w.activation("a", activations(n), step, max_samples=4)  # 4 maps, all n counted
    assert dead_findings(tmp_path) == {("run", DEAD, "dead", n)}
    (stored,) = reader.list(tmp_path)["run"]["a"][-1:]
    assert reader.read(tmp_path, "run", "a", step=stored).shape == (4, 6, 6, 3)


def test_firing_columns_are_exact_and_match_in_batches():
    a = activations(300)
    rec = make_record(a, kind="activation", layout="NHWC", max_samples=4, max_filters=[2, 0])
    names = rec.header["stats"]
    assert names == [*encoding.STAT_NAMES, *FIRING_STATS] and rec.array.shape == (4, 6, 6, 2)
    cols = rec.stats[:, [names.index(c) for c in FIRING_STATS]]
    fired = a > 0
    expected_inputs = fired.any(axis=(1, 2)).mean(axis=0)[[2, 0]]
    expected_positions = fired.mean(axis=(0, 1, 2))[[2, 0]]
    np.testing.assert_allclose(cols[:, 0], expected_inputs, rtol=1e-6)
    np.testing.assert_allclose(cols[:, 1], expected_positions, rtol=1e-6)
    assert cols[:, 2].tolist() == [300, 300]
    batched = Firing()
    for start in range(0, 300, 64):
        batched.add(a[start : start + 64], "NHWC")
    np.testing.assert_array_equal(batched.columns(), Firing().add(a, "NHWC").columns())
    # NCHW counts the same as NHWC
    np.testing.assert_array_equal(
        Firing().add(a.transpose(0, 3, 1, 2), "NCHW").columns(), batched.columns()
    )


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_nan_never_fires(dtype):
    a = np.full((2, 3, 3, 2), np.nan, dtype)
    a[0, 0, 0, 1] = 1.0
    counts = Firing().add(a, "NHWC")
    assert counts.fired_inputs.tolist() == [0, 1] and counts.fired_positions.tolist() == [0, 1]


def test_firing_argument_errors_name_the_bad_value():
    a = activations(4)
    with pytest.raises(ValueError, match=r"firing counts 2 channels over 4 inputs; data"):
        make_record(a, kind="activation", layout="NHWC", firing=Firing().add(a[..., :2], "NHWC"))
    with pytest.raises(ValueError, match="firing applies to activations"):
        make_record(a, kind="kernel", layout="HWIO", firing=Firing().add(a, "NHWC"))
    with pytest.raises(ValueError, match=r"does not match the 3 channels x 36 positions"):
        Firing().add(a, "NHWC").add(a[:, :3], "NHWC")


def test_old_and_new_records_round_trip_and_serve_their_stats(tmp_path):
    a = activations(60)
    with Writer(tmp_path / "run") as w:
        w.write_record("old", old_format_record(a[:4]), 0)
        w.activation("new", a, 0, max_samples=4)
    for tag in ("old", "new"):
        assert reader.read(tmp_path, "run", tag, step=0).tobytes() == a[:4].tobytes()
    client = plugin_client(tmp_path)
    old = client.get(PREFIX + "stats?run=run&tag=old").json
    new = client.get(PREFIX + "stats?run=run&tag=new").json
    assert old["names"] == list(encoding.STAT_NAMES)
    assert new["names"] == [*encoding.STAT_NAMES, *FIRING_STATS]
    assert new["steps"][0]["values"][RARE][-3:] == [
        pytest.approx(2 / 60),
        pytest.approx(2 / 60 / 36),
        60,
    ]


def test_cli_lists_suspected_dead_but_gates_on_it_only_with_strict(tmp_path, capsys):
    with Writer(tmp_path / "run") as w:
        w.activation("a", activations(4), 0)
    assert cli.main(["doctor", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "suspected_dead" in out and "inputs=4" in out
    assert cli.main(["doctor", str(tmp_path), "--strict"]) == 1
    capsys.readouterr()
    assert cli.main(["doctor", str(tmp_path), "--dead-min-inputs", "4"]) == 1
    assert " dead " in capsys.readouterr().out


def _firing_columns(logdir, run, tag, step):
    client = plugin_client(logdir)
    stats = client.get(PREFIX + "stats", query_string={"run": run, "tag": tag}).json
    values = np.array(next(s["values"] for s in stats["steps"] if s["step"] == step))
    return values[:, [stats["names"].index(c) for c in FIRING_STATS]]


def test_keras_callback_counts_firing_over_all_sample_inputs_and_stores_a_few_maps(tmp_path):
    import keras

    from tb_convfilters.keras import FiltersCallback

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(300, 8, 8, 1)).astype(np.float32)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(6, 3, activation="relu", name="c"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = [
        FiltersCallback(tmp_path / "b64", sample_inputs=x, max_samples=4, batch_size=64),
        FiltersCallback(tmp_path / "b300", sample_inputs=x, max_samples=4, batch_size=300),
    ]
    model.fit(x, np.zeros(300, int), epochs=1, verbose=0, callbacks=callbacks)
    outputs = keras.ops.convert_to_numpy(keras.Model(model.inputs, model.get_layer("c").output)(x))
    for run in ("b64", "b300"):
        stored = reader.read(tmp_path / run, "train", "c/activation", step=0)
        np.testing.assert_allclose(stored, outputs[:4], atol=1e-6)
        cols = _firing_columns(tmp_path / run, "train", "c/activation", 0)
        np.testing.assert_allclose(cols[:, 0], (outputs > 0).any(axis=(1, 2)).mean(0), atol=1e-6)
        np.testing.assert_allclose(cols[:, 1], (outputs > 0).mean((0, 1, 2)), atol=1e-6)
        assert cols[:, 2].tolist() == [300] * 6
    with pytest.raises(ValueError, match="max_samples=0 must be a positive integer"):
        FiltersCallback(tmp_path, sample_inputs=x, max_samples=0)


def test_torch_sample_activations_run_in_batches_in_eval_mode(tmp_path):
    import torch

    from tb_convfilters.torch import flush, log_activations, log_sample_activations

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 5, 3), torch.nn.Dropout(0.5), torch.nn.Conv2d(5, 4, 3)
    ).train()
    x = torch.randn(130, 1, 9, 9)
    tags = log_sample_activations(tmp_path / "run", model, 3, x, batch_size=50, max_samples=3)
    flush(tmp_path / "run")  # written in the background
    assert tags == ["0/activation", "2/activation"] and model.training
    with torch.no_grad():
        first = model[0](x)
        second = model[2](first)  # eval: no dropout
    for tag, out in (("0/activation", first), ("2/activation", second)):
        stored = reader.read(tmp_path, "run", tag, step=3)
        assert stored.tobytes() == out[:3].numpy().tobytes()
        cols = _firing_columns(tmp_path, "run", tag, 3)
        np.testing.assert_allclose(cols[:, 0], (out > 0).any(3).any(2).float().mean(0), atol=1e-6)
        assert cols[:, 2].tolist() == [130] * out.shape[1]
    # the context manager counts every pass in the block, stores the first maps
    with torch.no_grad(), log_activations(tmp_path / "run", model.eval(), 4, modules=["0"]):
        model(x[:5])
        model(x[5:20])
    flush(tmp_path / "run")
    assert reader.read(tmp_path, "run", "0/activation", step=4).shape == (8, 5, 7, 7)
    assert _firing_columns(tmp_path, "run", "0/activation", 4)[:, 2].tolist() == [20] * 5
    with pytest.raises(ValueError, match="batch_size=0 must be a positive integer"):
        log_sample_activations(tmp_path / "run", model, 5, x, batch_size=0)
