"""tb_convfilters.dynamics on event files written by the Writer: zero filters, step order,
errors, memory; the grad_norm column and log_kernels' new arguments."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from tb_convfilters import Writer, dynamics, reader
from tb_convfilters import torch as tb_torch
from tb_convfilters._record import encoding
from tb_convfilters._record.record import make_record

rng = np.random.default_rng(7)


def test_zero_filters_give_inf_when_they_move_and_nan_when_they_stay(tmp_path):
    ks = [rng.normal(size=(4, 2, 3, 3)).astype("f4") for _ in range(3)]  # OIHW
    ks[0][1] = 0  # filter 1: zero, then moves: inf
    ks[0][2] = ks[1][2] = 0  # filter 2: zero twice (nan), then moves (inf)
    with Writer(tmp_path / "r") as w:
        for step, k in enumerate(ks):
            w.kernel("k", k, step, layout="OIHW")
    _, ratios = dynamics.update_ratios(tmp_path, "r", "k")
    assert np.isinf(ratios[0, 1]) and np.isfinite(ratios[1, 1])
    assert np.isnan(ratios[0, 2]) and np.isinf(ratios[1, 2])
    _, rot = dynamics.rotation(tmp_path, "r", "k", per_filter=True)
    assert np.isnan(rot[:, 1]).all() and np.isnan(rot[:, 2]).all()
    assert rot[0, 0] == 0 and 0 < rot[1, 0] <= 2
    _, layer = dynamics.rotation(tmp_path, "r", "k")
    assert layer[0] == 0 and np.isfinite(layer).all()


def test_steps_out_of_order_and_logged_twice_read_in_step_order_last_wins(tmp_path):
    ks = {s: rng.normal(size=(3, 3, 2, 4)).astype("f4") for s in (0, 1, 2)}
    late = rng.normal(size=(3, 3, 2, 4)).astype("f4")
    with Writer(tmp_path / "r") as w:
        for s in (2, 0, 1):
            w.kernel("k", ks[s], s)
        w.kernel("k", late, 1)  # step 1 again: this one wins, as in reader
    ks[1] = late
    steps, ratios = dynamics.update_ratios(tmp_path, "r", "k")
    assert list(steps) == [0, 1, 2]
    rows = [np.moveaxis(ks[s], 3, 0).reshape(4, -1).astype("f8") for s in steps]
    want = [
        np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1)
        for a, b in zip(rows[:-1], rows[1:], strict=True)
    ]
    np.testing.assert_allclose(ratios, want, rtol=1e-6)


def test_errors_name_what_exists(tmp_path):
    with Writer(tmp_path / "r") as w:
        w.kernel("k", rng.normal(size=(3, 3, 2, 4)).astype("f4"), 0)
        w.kernel("k", rng.normal(size=(3, 3, 2, 5)).astype("f4"), 1)  # the layer grew
        w.activation("act", rng.random((2, 4, 4, 3)).astype("f4"), 0)
    with pytest.raises(reader.NotFoundError, match="'nope'.*runs: r"):
        dynamics.update_ratios(tmp_path, "nope", "k")
    with pytest.raises(reader.NotFoundError, match="tag 'x' not found.*tags: act, k"):
        dynamics.rotation(tmp_path, "r", "x")
    with pytest.raises(ValueError, match="'act'.*activations.*kernels"):
        dynamics.read(tmp_path, "r", "act")
    with pytest.raises(ValueError, match="step 1 has shape .*the layer changed"):
        dynamics.read(tmp_path, "r", "k")


def test_one_step_gives_no_ratios_and_zero_rotation(tmp_path):
    with Writer(tmp_path / "r") as w:
        w.kernel("k", rng.normal(size=(3, 3, 2, 4)).astype("f4"), 5)
    steps, ratios = dynamics.update_ratios(tmp_path, "r", "k")
    assert list(steps) == [5] and ratios.shape == (0, 4)
    assert list(dynamics.rotation(tmp_path, "r", "k")[1]) == [0.0]
    assert dynamics.grad_norms(tmp_path, "r", "k")[1].shape == (0, 4)
    assert dynamics.read(tmp_path, "r", "k").intervals == []


def test_memory_holds_a_few_steps_whatever_their_number(tmp_path):
    shape = (3, 3, 64, 128)  # 295 kB per step as float32, 590 kB as float64
    with Writer(tmp_path / "r") as w:
        k = rng.normal(size=shape).astype("f4")
        for step in range(60):
            w.kernel("k", k, step)
            k = k + 0.01
    tracemalloc.start()
    dynamics.read(tmp_path, "r", "k")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 12 * np.prod(shape) * 8, peak  # 60 steps would be 35 MB as float64


def test_grad_norm_column_is_read_by_name_and_follows_kept_filters(tmp_path):
    k = rng.normal(size=(3, 3, 4, 6)).astype("f4")
    g = rng.normal(size=k.shape).astype("f4")
    rec = make_record(k, kind="kernel", layout="HWIO", grad=g, max_filters=[1, 4], max_channels=2)
    assert rec.header["stats"] == [*encoding.STAT_NAMES, "grad_norm"]
    kept = g[:, :, :2][..., [1, 4]]
    want = np.linalg.norm(np.moveaxis(kept, 3, 0).reshape(2, -1), axis=1)
    np.testing.assert_allclose(rec.stats[:, -1], want, rtol=1e-6)
    with pytest.raises(ValueError, match=r"grad has shape \(2, 2\); the kernel has shape"):
        make_record(k, kind="kernel", layout="HWIO", grad=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="grad applies to kernels"):
        make_record(k, kind="activation", layout="NHWC", grad=g)


def test_log_kernels_grads_and_updates(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 3))
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    model[1].weight.grad = None
    with pytest.warns(UserWarning, match="'1/weight' has no gradient"):
        tb_torch.log_kernels(tmp_path, model, 3, grads=True, updates=12)
    tb_torch.flush(tmp_path)
    steps, norms = dynamics.grad_norms(tmp_path, ".", "0/weight")
    want = np.linalg.norm(model[0].weight.grad.numpy().reshape(4, -1), axis=1)
    assert list(steps) == [3]
    np.testing.assert_allclose(norms[0], want, rtol=1e-6)
    assert dynamics.grad_norms(tmp_path, ".", "1/weight")[0].size == 0
    assert dynamics.read(tmp_path, ".", "1/weight").updates == [12]
    with pytest.raises(TypeError, match="grads="):
        tb_torch.log_kernels(tmp_path, model, 4, grads="yes")
    with pytest.raises(ValueError, match="updates=-1"):
        tb_torch.log_kernels(tmp_path, model, 4, updates=-1)


def test_doctor_dates_an_exploding_update(tmp_path):
    from tb_convfilters import doctor

    k = rng.normal(size=(3, 3, 4, 8)).astype("f4")
    with Writer(tmp_path / "r") as w:
        for step in range(6):
            w.kernel("k", k, step)
            k = k + rng.normal(0, 0.02, k.shape).astype("f4")  # ratios about 0.02
            if step == 2:  # filter 5 jumps by about half its norm between steps 2 and 3
                k[..., 5] += 0.5 * np.linalg.norm(k[..., 5]) / np.sqrt(36)
    (found,) = doctor.diagnose(tmp_path)
    assert (found.filter, found.problem, found.first_step) == (5, "exploding_updates", 2)
    assert found.detail["to_step"] == 3 and found.detail["intervals"] == 1
    assert found.detail["times_median"] > 10
    _, ratios = dynamics.update_ratios(tmp_path, "r", "k")
    assert found.detail["ratio"] == pytest.approx(ratios[2, 5])


def test_tiny_updates_keep_their_precision(tmp_path):
    k = rng.normal(size=(3, 3, 16, 8)).astype("f4")
    moved = k.copy()
    moved[0, 0, 0] += np.float32(1e-5) * np.abs(k[0, 0, 0])  # ratios about 1e-6
    with Writer(tmp_path / "r") as w:
        w.kernel("k", k, 0)
        w.kernel("k", moved, 1)
    _, ratios = dynamics.update_ratios(tmp_path, "r", "k")
    a = np.moveaxis(k, 3, 0).reshape(8, -1).astype("f8")
    b = np.moveaxis(moved, 3, 0).reshape(8, -1).astype("f8")
    want = np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1)
    assert (want < 1e-5).all() and (want > 0).all()
    np.testing.assert_allclose(ratios[0], want, rtol=1e-6)
