"""The filter doctor: planted problems in small Keras CNNs, the CLI, the findings route,
and edge cases on hand-written logs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import PREFIX, http_get, plugin_client, tensorboard

from tb_convfilters import Writer, cli, doctor

KERAS_RUNS = ("healthy", "dead", "exploding", "duplicate", "frozen")
DEAD = [1, 2, 5, 6]  # conv1 filters given a large negative bias
EXPLODING = [3, 6]  # conv2 filters multiplied by 10 after every epoch
COPY, ORIGINAL = 5, 2  # conv1 filter 5 starts as a copy of filter 2
EPOCHS = 4


def synthetic_images(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """16x16x3 noise with horizontal (class 0) or vertical (class 1) stripes, standardised."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    wave = np.sin(np.arange(16) * rng.uniform(0.5, 1.5, (n, 1)))  # (n, 16)
    stripes = np.where(labels[:, None, None] == 0, wave[:, :, None], wave[:, None, :])
    x = stripes[..., None] * rng.uniform(0.5, 1.0, (n, 1, 1, 3)) + rng.normal(
        0, 0.5, (n, 16, 16, 3)
    )
    x = (x - x.mean()) / x.std()
    return x.astype(np.float32), labels.astype(np.int32)


def train_keras(logdir: str, problem: str, seed: int = 0, epochs: int = EPOCHS) -> None:
    """Trains conv1 -> conv2 -> pool -> dense for a few epochs with `problem` planted."""
    import keras
    import tensorflow as tf

    from tb_convfilters import summary

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(
        8, 3, padding="same", activation="relu", name="conv2", trainable=problem != "frozen"
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    conv1, conv2 = model.get_layer("conv1"), model.get_layer("conv2")
    if problem == "dead":
        bias = np.zeros(8, np.float32)
        bias[DEAD] = -50.0
        conv1.bias.assign(bias)
    if problem == "duplicate":
        k1, b1 = conv1.kernel.numpy(), np.random.default_rng(1).normal(0, 0.1, 8)
        k1[..., COPY], b1[COPY] = k1[..., ORIGINAL], b1[ORIGINAL]
        conv1.kernel.assign(k1)
        conv1.bias.assign(b1.astype(np.float32))
        k2 = conv2.kernel.numpy()  # the next layer reads both channels alike: symmetry holds
        k2[:, :, COPY, :] = k2[:, :, ORIGINAL, :]
        conv2.kernel.assign(k2)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    images, labels = synthetic_images(seed=seed)
    probe = images[: doctor.DEAD_MIN_INPUTS]  # firing judged on these; 8 maps stored
    probe_model = keras.Model(inputs, [conv1.output, conv2.output])
    writer = tf.summary.create_file_writer(logdir)

    def log(step: int) -> None:
        maps = probe_model(probe)
        with writer.as_default():
            for layer, fmap in zip((conv1, conv2), maps, strict=True):
                summary.kernel(f"{layer.name}/kernel", layer.kernel.numpy(), step=step)
                summary.activation(f"{layer.name}/activation", fmap, step=step, max_samples=8)
        writer.flush()

    class Explode(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            k = conv2.kernel.numpy()
            k[..., EXPLODING] *= 10
            conv2.kernel.assign(k)

    class Log(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            log(epoch + 1)

    log(0)
    callbacks = [Explode()] if problem == "exploding" else []
    model.fit(
        images, labels, batch_size=32, epochs=epochs, verbose=0, callbacks=[*callbacks, Log()]
    )
    writer.close()


@pytest.fixture(scope="module")
def keras_logdir(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("keras")
    for problem in KERAS_RUNS:
        train_keras(str(logdir / problem), problem)
    return logdir


def planted(findings: list[doctor.Finding]) -> set[tuple]:
    return {(f.tag, f.filter, f.problem) for f in findings}


def test_keras_healthy_run_has_no_finding(keras_logdir):
    assert doctor.diagnose(keras_logdir, run="healthy") == []


def test_keras_dead_filters(keras_logdir):
    findings = doctor.diagnose(keras_logdir, run="dead")
    assert planted(findings) == {("conv1/activation", f, "dead") for f in DEAD}
    for f in findings:
        assert f.run == "dead" and f.first_step == 0
        assert f.detail["zero_frac"] == 1.0 and f.detail["dead_steps"] == EPOCHS + 1


def test_keras_exploding_filters(keras_logdir):
    findings = doctor.diagnose(keras_logdir, run="exploding")
    assert planted(findings) == {("conv2/kernel", f, "exploding") for f in EXPLODING}
    for f in findings:
        assert f.first_step in (1, 2)  # growth past 10x: after the first or second x10
        assert f.detail["norm_last"] > 1000 * f.detail["norm_first"]


def test_keras_duplicate_filters(keras_logdir):
    (finding,) = doctor.diagnose(keras_logdir, run="duplicate")
    assert (finding.tag, finding.filter, finding.problem) == ("conv1/kernel", COPY, "duplicate")
    assert finding.detail["other_filter"] == ORIGINAL
    assert finding.detail["cosine"] > 0.999
    assert finding.first_step == 0


def test_keras_frozen_layer(keras_logdir):
    (finding,) = doctor.diagnose(keras_logdir, run="frozen")
    assert (finding.tag, finding.filter, finding.problem) == ("conv2/kernel", None, "frozen")
    assert finding.detail["max_change"] == 0.0
    assert finding.detail["changed_layers"] == 1  # conv1 trained
    assert finding.first_step == 1


def test_findings_route_matches_diagnose(keras_logdir):
    client = plugin_client(keras_logdir)
    expected = [f.to_json() for f in doctor.diagnose(keras_logdir)]
    body = client.get(PREFIX + "findings").json
    assert body["findings"] == expected and len(expected) == 8
    assert body["thresholds"]["duplicate_cosine"] == 0.99
    one = client.get(PREFIX + "findings", query_string={"run": "frozen"})
    assert one.status_code == 200
    assert one.json["findings"] == [f.to_json() for f in doctor.diagnose(keras_logdir, "frozen")]
    missing = client.get(PREFIX + "findings", query_string={"run": "nope"})
    assert missing.status_code == 404 and "nope" in missing.json["error"]
    twice = client.get(PREFIX + "findings?run=dead&run=frozen")
    assert twice.status_code == 400


# ---- command line ----


def exit_code(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as e:  # argparse usage errors
        return e.code


def test_cli_exit_codes_and_json(keras_logdir, capsys):
    assert exit_code(["doctor", str(keras_logdir), "--run", "healthy"]) == 0
    assert "0 finding(s)" in capsys.readouterr().out

    assert exit_code(["doctor", str(keras_logdir), "--run", "dead", "--json"]) == 1
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [set(r) for r in rows] == [
        {"run", "tag", "filter", "problem", "first_step", "detail"}
    ] * len(DEAD)
    assert sorted(r["filter"] for r in rows) == DEAD

    assert exit_code(["doctor", str(keras_logdir)]) == 1
    table = capsys.readouterr().out
    assert "conv2/kernel" in table and "frozen" in table and "layer" in table
    assert "8 finding(s); 20 series in 5 run(s) checked" in table

    # gate only on some problems
    assert exit_code(["doctor", str(keras_logdir), "--problems", "frozen", "--run", "dead"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--run", "nope"], "run='nope' has no event files"),
        (["--dead-fraction", "1.5"], "dead_fraction=1.5 is out of range; allowed: 0 < x <= 1"),
        (["--duplicate-cosine", "nan"], "duplicate_cosine=nan is out of range"),
    ],
)
def test_cli_usage_errors_exit_2(keras_logdir, capsys, argv, message):
    assert exit_code(["doctor", str(keras_logdir), *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_bad_paths_and_flags_exit_2(tmp_path, capsys):
    assert exit_code(["doctor", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert exit_code(["doctor", str(tmp_path)]) == 2  # no convfilters data at all
    assert "no convfilters kernels or activations" in capsys.readouterr().err
    assert exit_code(["doctor", str(tmp_path), "--problems", "sad"]) == 2
    assert "'sad' is not a comma-separated list of: dead," in capsys.readouterr().err
    assert exit_code(["doctor"]) == 2
    assert exit_code(["doctor", str(tmp_path), "--dead-steps", "x"]) == 2


# ---- hand-written logs: each rule alone ----


def write_steps(logdir, tag: str, kernels: list[np.ndarray], **kwargs) -> None:
    with Writer(logdir) as w:
        for step, k in enumerate(kernels):
            w.kernel(tag, k, step, **kwargs)


def random_kernel(seed: int, filters: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(3, 3, 2, filters)).astype(np.float32)


def test_nonfinite_and_zero_kernels(tmp_path):
    ks = [random_kernel(s) for s in range(4)]
    ks[2] = ks[2].copy()
    ks[2][0, 0, 0, 4] = np.nan  # filter 4 has a NaN at step 2 only
    for k in ks:
        k[..., 1] = 0  # filter 1 is all zero
    write_steps(tmp_path / "r", "k", ks)
    findings = doctor.diagnose(tmp_path)
    assert planted(findings) == {("k", 1, "dead"), ("k", 4, "exploding")}
    by_problem = {f.problem: f for f in findings}
    assert by_problem["exploding"].first_step == 2
    assert by_problem["exploding"].detail["reasons"] == ["nonfinite"]
    assert by_problem["exploding"].detail["nonfinite"] == pytest.approx(1 / 18)
    assert by_problem["dead"].detail["norm"] == 0.0
    # JSON never holds NaN
    json.dumps([f.to_json() for f in findings], allow_nan=False)


def test_outlier_norm_counts_as_exploding_and_growth_is_relative(tmp_path):
    k = random_kernel(0)
    big = k.copy()
    big[..., 0] *= 1000  # orders of magnitude above the layer's median from the start
    write_steps(tmp_path / "r", "k", [big, big])
    (finding,) = doctor.diagnose(tmp_path)
    assert (finding.filter, finding.problem, finding.first_step) == (0, "exploding", 0)
    assert finding.detail["reasons"] == ["outlier"]
    # 5x growth stays under the default factor 10, over a factor 4 it is flagged
    grown = k.copy()
    grown[..., 3] *= 5
    write_steps(tmp_path / "g", "k", [k, grown])
    assert doctor.diagnose(tmp_path, run="g") == []
    (finding,) = doctor.diagnose(tmp_path, "g", doctor.Thresholds(explode_growth=4))
    assert finding.filter == 3 and finding.detail["reasons"] == ["growth"]
    assert finding.detail["growth"] == pytest.approx(5, rel=1e-5)


def test_dead_needs_the_last_k_steps(tmp_path):
    def acts(dead: bool) -> np.ndarray:
        a = np.random.default_rng(0).normal(size=(4, 5, 5, 3)).astype(np.float32)
        if dead:
            a[..., 2] = -np.abs(a[..., 2])
        return a

    with Writer(tmp_path / "r") as w:
        for step, dead in enumerate([False, True, False, True, True, True]):
            w.activation("a", acts(dead), step * 10, max_samples=4)
    four = doctor.Thresholds(dead_min_inputs=4)
    (finding,) = doctor.diagnose(tmp_path, thresholds=four)
    assert (finding.filter, finding.problem, finding.first_step) == (2, "dead", 30)
    assert finding.detail == {"dead_steps": 3, "zero_frac": 1.0, "inputs": 4}
    assert doctor.diagnose(tmp_path, thresholds=doctor.Thresholds(dead_steps=4)) == []
    (unsure,) = doctor.diagnose(tmp_path)  # 4 inputs are too few to be sure
    assert (unsure.filter, unsure.problem, unsure.detail["inputs"]) == (2, "suspected_dead", 4)


def test_mirrored_kept_indices_and_dating(tmp_path):
    ks = [random_kernel(s, filters=8) for s in range(9)]
    for step in range(5, 9):  # from step 5 on, filter 6 is filter 3 negated (and scaled)
        ks[step][..., 6] = -2 * ks[step][..., 3]
    for step in range(3, 9):  # from step 3 on, filter 7 copies filter 1
        ks[step][..., 7] = ks[step][..., 1]
    write_steps(tmp_path / "r", "k", ks, max_filters=[0, 1, 3, 5, 6, 7])  # original indices
    loads = []
    series = doctor.logdir_series(tmp_path)
    for s in series:
        s.load = (lambda load: lambda step: loads.append(step) or load(step))(s.load)
    findings = doctor.diagnose_series(series)
    assert [(f.filter, f.problem, f.first_step, f.detail["other_filter"]) for f in findings] == [
        (6, "mirrored", 5, 3),
        (7, "duplicate", 3, 1),
    ]
    assert findings[0].detail["cosine"] == pytest.approx(-1)
    assert findings[0].detail["norm_ratio"] == pytest.approx(2)
    # the stats screen rules out steps 0-2 unread; a binary search dates the pairs in 3..8
    assert min(loads) == 3 and 8 in loads and len(loads) == len(set(loads)) == 5


def test_depthwise_kept_channels_map_to_original_filters(tmp_path):
    k = np.random.default_rng(0).normal(size=(3, 3, 4, 2)).astype(np.float32)  # HWIM, M=2
    k[:, :, 3, 1] = k[:, :, 1, 0]  # filter 3*2+1 copies filter 1*2+0
    write_steps(tmp_path / "r", "dw", [k], layout="HWIM", max_filters=[1, 3])
    (finding,) = doctor.diagnose(tmp_path)
    assert (finding.filter, finding.problem, finding.detail["other_filter"]) == (7, "duplicate", 2)


def test_duplicate_dating_survives_stats_that_only_look_alike(tmp_path):
    rng = np.random.default_rng(5)
    ks = []
    for step in range(12):
        k = random_kernel(step)
        if step >= 7:
            k[..., 4] = k[..., 0]
        else:  # same stats as filter 0 (a permutation), different direction
            k[..., 4] = rng.permutation(k[..., 0].reshape(-1)).reshape(k[..., 0].shape)
        ks.append(k)
    write_steps(tmp_path / "r", "k", ks)
    (finding,) = doctor.diagnose(tmp_path)
    assert (finding.filter, finding.problem, finding.first_step) == (4, "duplicate", 7)


def test_frozen_needs_another_layer_that_moved(tmp_path):
    fixed = random_kernel(0)
    write_steps(tmp_path / "still", "a", [fixed] * 3)
    write_steps(tmp_path / "still", "b", [random_kernel(1)] * 3)
    assert doctor.diagnose(tmp_path, "still") == []  # nothing trained: no layer is singled out
    with Writer(tmp_path / "one") as w:
        for step in range(4):
            w.kernel("a", fixed, step * 5)
            w.kernel("b", random_kernel(1) * (1 + (step >= 2)), step * 5)  # moves at step 10
    (finding,) = doctor.diagnose(tmp_path, "one")
    assert (finding.tag, finding.filter, finding.problem) == ("a", None, "frozen")
    assert finding.first_step == 10
    # a tiny change: not frozen bit-exactly, frozen within a relative tolerance
    nudged = fixed.copy()
    nudged[0, 0, 0, 0] += 1e-4
    write_steps(tmp_path / "nudged", "a", [fixed, nudged])
    write_steps(tmp_path / "nudged", "b", [random_kernel(1), random_kernel(2)])
    assert doctor.diagnose(tmp_path, "nudged") == []
    loose = doctor.Thresholds(frozen_rtol=1e-3)
    assert planted(doctor.diagnose(tmp_path, "nudged", loose)) == {("a", None, "frozen")}


def test_provider_and_event_file_sources_agree(tmp_path):
    ks = [random_kernel(s) for s in range(5)]
    for k in ks:
        k[..., 5] = k[..., 2]
        k[..., 0] = 0
    write_steps(tmp_path / "a", "conv/kernel", ks)
    write_steps(tmp_path / "a", "frozen/kernel", [random_kernel(9)] * 5)
    with Writer(tmp_path / "b") as w:
        w.activation("act", -np.ones((2, 4, 4, 3), np.float32), 0, max_samples=2)
    expected = [f.to_json() for f in doctor.diagnose(tmp_path)]
    assert {(f["run"], f["tag"], f["filter"], f["problem"]) for f in expected} == {
        ("a", "conv/kernel", 0, "dead"),
        ("a", "conv/kernel", 5, "duplicate"),
        ("a", "frozen/kernel", None, "frozen"),
        ("b", "act", 0, "suspected_dead"),  # judged on 2 inputs
        ("b", "act", 1, "suspected_dead"),
        ("b", "act", 2, "suspected_dead"),
    }
    assert plugin_client(tmp_path).get(PREFIX + "findings").json["findings"] == expected


def test_rust_data_server_serves_findings(tmp_path):
    """plugin_client covers the Python loader; the Rust data server reads blobs over gRPC."""
    ks = [random_kernel(s) for s in range(3)]
    for k in ks:
        k[..., 4] = -k[..., 1]
    write_steps(tmp_path / "logs" / "run", "k", ks)
    expected = [f.to_json() for f in doctor.diagnose(tmp_path / "logs")]
    assert [(f["filter"], f["problem"]) for f in expected] == [(4, "mirrored")]
    with tensorboard(tmp_path / "logs", load_fast="true") as base:
        status, body, _ = http_get(base + "/data/plugin/convfilters/findings?run=run")
        assert status == 200 and json.loads(body)["findings"] == expected
        status, body, _ = http_get(base + "/data/plugin/convfilters/findings?run=other")
        assert status == 404 and "other" in json.loads(body)["error"]


def test_thresholds_reject_bad_values():
    with pytest.raises(ValueError, match=r"dead_steps=0 is out of range; allowed: an integer >= 1"):
        doctor.Thresholds(dead_steps=0)
    with pytest.raises(ValueError, match=r"explode_growth=1 is out of range; allowed: x > 1"):
        doctor.Thresholds(explode_growth=1)
