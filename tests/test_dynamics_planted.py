"""Training dynamics and the doctor's ``stalled`` on small CNNs with one conv2 filter held
fixed from a chosen epoch (PyTorch and Keras), against a numpy recomputation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_doctor import synthetic_images

from tb_convfilters import doctor, dynamics, reader
from tb_convfilters import torch as tb_torch
from tb_convfilters.dynamics import filter_rows

EPOCHS = 8
STALL_EPOCH = 4  # the filter is held fixed while epochs 4.. train
STALLED = 5  # that conv2 filter
BATCHES = 8  # per epoch: 256 images in batches of 32
RUNS = ("stalled", "healthy")


def train_torch(logdir: str, stall: bool, seed: int = 0) -> dict[int, np.ndarray]:
    """conv1 -> relu -> conv2 -> relu -> pool -> linear; logs kernels and gradients at the
    end of every epoch (step = epoch + 1; step 0 before training). Returns conv2's
    gradient at each logged step."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 2),
    )
    conv2 = model[2]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    images, labels = synthetic_images(seed=seed)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y_all = torch.from_numpy(labels).long()
    grads = {}
    tb_torch.log_kernels(logdir, model, 0, updates=0)
    updates, held = 0, None
    for epoch in range(EPOCHS):
        if stall and epoch == STALL_EPOCH:
            held = conv2.weight[STALLED].detach().clone()
        for i in range(0, len(x_all), 32):
            loss = torch.nn.functional.cross_entropy(model(x_all[i : i + 32]), y_all[i : i + 32])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            updates += 1
            if held is not None:
                with torch.no_grad():
                    conv2.weight[STALLED] = held
        grads[epoch + 1] = conv2.weight.grad.numpy().copy()
        tb_torch.log_kernels(logdir, model, epoch + 1, grads=True, updates=updates)
    tb_torch.common._writer_for(logdir).close()
    return grads


def train_keras(logdir: str, stall: bool, seed: int = 0) -> None:
    """The same CNN in Keras, logged by ``FiltersCallback`` (step = epoch, 0-based: the
    weights after epoch 3 are step 3); the filter is restored after every batch of
    epochs 4..: a constraint-free way to hold it fixed."""
    import keras

    from tb_convfilters.keras import FiltersCallback

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    conv2 = model.get_layer("conv2")
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    class Hold(keras.callbacks.Callback):
        held = None

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == STALL_EPOCH:
                self.held = conv2.kernel.numpy()[..., STALLED].copy()

        def on_train_batch_end(self, batch, logs=None):
            if self.held is not None:
                k = conv2.kernel.numpy()
                k[..., STALLED] = self.held
                conv2.kernel.assign(k)

    images, labels = synthetic_images(seed=seed)
    callbacks = ([Hold()] if stall else []) + [FiltersCallback(logdir)]
    model.fit(images, labels, batch_size=32, epochs=EPOCHS, verbose=0, callbacks=callbacks)


@pytest.fixture(scope="module")
def torch_runs(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("dyn_torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grads = {
            run: train_torch(str(logdir / run), run == "stalled") for run in ("stalled", "healthy")
        }
    return logdir, grads


@pytest.fixture(scope="module")
def keras_runs(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("dyn_keras")
    for run in ("stalled", "healthy"):
        train_keras(str(logdir / run), run == "stalled")
    return logdir


def recomputed(logdir, run: str, tag: str, layout: str):
    """Update ratios, layer and per-filter rotations straight from reader.read (float64)."""
    steps = reader.list(logdir)[run][tag]
    ws = [filter_rows(reader.read(logdir, run, tag, s), layout) for s in steps]
    ratios = np.array(
        [
            np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1)
            for a, b in zip(ws[:-1], ws[1:], strict=True)
        ]
    )
    w0 = ws[0]
    layer = np.array([1 - np.sum(w * w0) / (np.linalg.norm(w) * np.linalg.norm(w0)) for w in ws])
    per_filter = np.array(
        [
            1 - np.sum(w * w0, axis=1) / (np.linalg.norm(w, axis=1) * np.linalg.norm(w0, axis=1))
            for w in ws
        ]
    )
    return np.array(steps), ratios, layer, per_filter


def check_against_numpy(logdir, run: str, tag: str, layout: str) -> None:
    steps, ratios, layer, per_filter = recomputed(logdir, run, tag, layout)
    got_steps, got = dynamics.update_ratios(logdir, run, tag)
    np.testing.assert_array_equal(got_steps, steps)
    np.testing.assert_allclose(got, ratios, rtol=1e-5)
    _, rot = dynamics.rotation(logdir, run, tag)
    np.testing.assert_allclose(rot, layer, rtol=1e-5, atol=1e-12)
    _, rot_f = dynamics.rotation(logdir, run, tag, per_filter=True)
    np.testing.assert_allclose(rot_f, per_filter, rtol=1e-5, atol=1e-12)
    assert rot[0] == 0 and (rot_f[0] == 0).all()


def test_torch_stalled_filter_is_found_and_dated(torch_runs):
    logdir, _ = torch_runs
    found = doctor.diagnose(logdir, run="stalled")
    assert [(f.tag, f.filter, f.problem) for f in found] == [("2/weight", STALLED, "stalled")]
    # the last logged step before it stopped: the end of epoch STALL_EPOCH - 1 (step STALL_EPOCH)
    assert abs(found[0].first_step - STALL_EPOCH) <= 1
    assert found[0].detail["stalled_intervals"] == EPOCHS - STALL_EPOCH
    assert found[0].detail["median_ratio"] > doctor.Thresholds().stall_layer_ratio
    assert doctor.diagnose(logdir, run="healthy") == []


def test_torch_dynamics_equal_numpy(torch_runs):
    logdir, grads = torch_runs
    for run in ("stalled", "healthy"):
        for tag, layout in (("0/weight", "OIHW"), ("2/weight", "OIHW"), ("6/weight", "OI")):
            check_against_numpy(logdir, run, tag, layout)
        steps, norms = dynamics.grad_norms(logdir, run, "2/weight")
        assert list(steps) == list(range(1, EPOCHS + 1))  # step 0 was logged without
        want = [np.linalg.norm(grads[run][s].reshape(8, -1), axis=1) for s in steps]
        np.testing.assert_allclose(norms, want, rtol=1e-5)
        d = dynamics.read(logdir, run, "2/weight")
        assert d.intervals == [BATCHES] * EPOCHS and d.filters == list(range(8))
    _, ratios = dynamics.update_ratios(logdir, "stalled", "2/weight")
    assert (ratios[STALL_EPOCH:, STALLED] == 0).all() and (ratios[:STALL_EPOCH, STALLED] > 0).all()


def test_keras_stalled_filter_is_found_and_dated(keras_runs):
    found = doctor.diagnose(keras_runs, run="stalled/train")
    assert [(f.tag, f.filter, f.problem) for f in found] == [("conv2/kernel", STALLED, "stalled")]
    # FiltersCallback logs epoch e as step e: the weights after epoch 3 are the last moving
    assert abs(found[0].first_step - (STALL_EPOCH - 1)) <= 1
    assert doctor.diagnose(keras_runs, run="healthy/train") == []


def test_keras_dynamics_equal_numpy(keras_runs):
    for run in ("stalled/train", "healthy/train"):
        for tag in ("conv1/kernel", "conv2/kernel"):
            check_against_numpy(keras_runs, run, tag, "HWIO")
        d = dynamics.read(keras_runs, run, "conv2/kernel")
        assert d.intervals == [BATCHES] * (EPOCHS - 1)
        assert not d.has_grads
