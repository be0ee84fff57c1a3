"""tb_convfilters.fastai.FiltersCallback in real fastai Learner.fit runs (CPU)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import pytest

pytest.importorskip("fastai.learner")
import torch  # noqa: E402
from fastai.callback.core import Callback  # noqa: E402
from fastai.callback.tensorboard import TensorBoardCallback  # noqa: E402
from fastai.data.core import DataLoaders  # noqa: E402
from fastai.learner import Learner  # noqa: E402
from support import plugin_client  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402
from trainer_support import filters_beside_scalars, our_files, served, steps_of  # noqa: E402

from tb_convfilters.fastai import FiltersCallback  # noqa: E402
from tb_convfilters.torch import to_numpy  # noqa: E402


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))


def make_data(n=12):
    torch.manual_seed(0)
    x = torch.randn(n + 4, 1, 7, 7)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    train, valid = TensorDataset(x[:n], y[:n]), TensorDataset(x[n:], y[n:])
    return x, DataLoaders.from_dsets(train, valid, bs=4, device="cpu")  # 3 batches an epoch


class Snapshots(Callback):
    """Every conv/linear weight at each epoch end and batch end, by ``train_iter``."""

    def __init__(self):
        self.epochs: dict[int, dict] = {}
        self.batches: dict[int, dict] = {}

    def take(self):
        named = self.learn.model.named_modules()
        return {f"{n}/weight": to_numpy(m.weight).copy() for n, m in named
                if isinstance(m, nn.Conv2d | nn.Linear)}

    def after_epoch(self):
        self.epochs[self.learn.train_iter] = self.take()

    def after_batch(self):
        if self.learn.training:
            self.batches[self.learn.train_iter] = self.take()


def learner(data, model=None, cbs=(), tensorboard_dir=None):
    cbs = list(cbs)
    if tensorboard_dir is not None:
        cbs.insert(0, TensorBoardCallback(str(tensorboard_dir), trace_model=False,
                                          log_preds=False))
    return Learner(data, model or make_model(), loss_func=nn.functional.cross_entropy,
                   lr=0.1, cbs=cbs)


def test_kernels_exact_per_epoch_next_to_the_tensorboard_callback(tmp_path):
    x, data = make_data()
    snaps = Snapshots()
    callback = FiltersCallback(sample_inputs=x[:5], batch_size=3, max_samples=2)
    learn = learner(data, cbs=[snaps, callback], tensorboard_dir=tmp_path / "tb")
    learn.fit(3)
    (ours,) = our_files(tmp_path)
    assert ours.parent == tmp_path / "tb"
    assert sorted(snaps.epochs) == [3, 6, 9]  # fastai's TensorBoard step: batches so far
    client = plugin_client(tmp_path)
    for tag in ("0/weight", "3/weight", "6/weight"):
        assert steps_of(client, "tb", tag) == [3, 6, 9], tag
        for step, weights in snaps.epochs.items():
            got, header = served(client, "tb", tag, step)
            assert header["layout"] == ("OI" if tag == "6/weight" else "OIHW")
            assert got.dtype == weights[tag].dtype and got.tobytes() == weights[tag].tobytes()
    model = learn.model.eval()  # activations: the final weights, eval mode, batches of 3
    with torch.no_grad():
        want = model[:4](x[:3])[:2]
    got, header = served(client, "tb", "3/activation", 9)
    assert header["layout"] == "NCHW" and got.tobytes() == want.numpy().tobytes()


def test_every_n_batches_and_the_end(tmp_path):
    _, data = make_data()
    snaps = Snapshots()
    learner(data, cbs=[snaps, FiltersCallback(tmp_path / "f", every_n_batches=4)]).fit(2)
    client = plugin_client(tmp_path)
    assert steps_of(client, "f", "0/weight") == [4, 6]  # 6: the end
    for step in (4, 6):
        got, _ = served(client, "f", "0/weight", step)
        assert got.tobytes() == snaps.batches[step]["0/weight"].tobytes()
    learner(data, cbs=[FiltersCallback(tmp_path / "e", every_n_epochs=2)]).fit(3)
    assert steps_of(plugin_client(tmp_path), "e", "0/weight") == [3, 9]  # epochs 0 and 2


def test_without_tensorboard_callback_a_log_dir_is_needed(tmp_path):
    _, data = make_data()
    with pytest.raises(ValueError, match="no TensorBoardCallback .*log_dir"):
        learner(data, cbs=[FiltersCallback()]).fit(1)
    with pytest.raises(ValueError, match="not submodules"):
        learner(data, cbs=[FiltersCallback(tmp_path, modules=["nope"])]).fit(1)
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        FiltersCallback(every_n_epochs=0)


def test_lr_find_is_not_logged(tmp_path):
    _, data = make_data(n=40)
    learn = learner(data, cbs=[FiltersCallback(tmp_path / "f", every_n_batches=1)])
    learn.lr_find(num_it=5, show_plot=False)
    assert our_files(tmp_path) == []


def test_a_failing_layer_is_warned_once_and_training_goes_on(tmp_path):
    _, data = make_data()
    bad = torch.zeros(2, 5, 7, 7)  # 5 channels: the first conv takes 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # filter 3 exists in the 4-filter conv only
        learner(data, cbs=[FiltersCallback(tmp_path, sample_inputs=bad, max_filters=[3])]).fit(3)
    ours = sorted(str(w.message) for w in caught if "FiltersCallback" in str(w.message)
                  or "log_kernels" in str(w.message))
    assert sum("sample_inputs" in m for m in ours) == 1, ours
    assert sum("'3/weight'" in m for m in ours) == 1 and sum("'6/weight'" in m for m in ours) == 1
    assert steps_of(plugin_client(tmp_path), ".", "0/weight") == [3, 6, 9]
    with pytest.raises(RuntimeError):
        learner(data, cbs=[FiltersCallback(tmp_path / "r", sample_inputs=bad,
                                           raise_errors=True)]).fit(1)


def test_a_removed_log_directory_is_warned_and_training_goes_on(tmp_path):
    _, data = make_data()
    callback = FiltersCallback(tmp_path / "f", modules=["0"])

    class Remove(Callback):
        def before_epoch(self):
            if self.learn.epoch == 1:  # step 3 is on disk; the record of step 6 fails
                callback._logger.writer.flush()
                shutil.rmtree(tmp_path / "f")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learner(data, cbs=[callback, Remove()]).fit(3)
    ours = [str(w.message) for w in caught if "could not write" in str(w.message)]
    assert len(ours) == 1 and "tag '0/weight' step 6" in ours[0], ours
    assert steps_of(plugin_client(tmp_path), "f", "0/weight") == [9]  # a new file


def test_tensorboard_shows_the_filters_tab_beside_fastais_scalars(tmp_path):
    x, data = make_data()
    callback = FiltersCallback(sample_inputs=x[:4])
    learner(data, cbs=[callback], tensorboard_dir=tmp_path / "tb").fit(1)
    filters_beside_scalars(tmp_path, "tb", "0/weight", "train_loss")


def test_import_names_the_extra_when_fastai_is_missing():
    code = ("import sys; sys.modules['fastai'] = None\n"
            "import tb_convfilters, tb_convfilters.torch\n"
            "try:\n    import tb_convfilters.fastai\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pip install 'tb-convfilters[fastai]'" in out, out
