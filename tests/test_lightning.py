"""tb_convfilters.lightning.FiltersCallback in real Trainer.fit runs (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pl = pytest.importorskip("lightning.pytorch")
import torch  # noqa: E402
from support import PREFIX, load_npy, plugin_client  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from tb_convfilters import PLUGIN_NAME  # noqa: E402
from tb_convfilters.lightning import FiltersCallback  # noqa: E402
from tb_convfilters.torch import to_numpy  # noqa: E402

WORKER = Path(__file__).with_name("lightning_ddp_worker.py")


def make_module(base):
    class Tiny(base):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3)
            )
            self.drop = nn.Dropout(0.5)
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.drop(self.features(x)).mean(dim=(2, 3)))

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    return Tiny()


def make_data(n=12):
    torch.manual_seed(0)
    x = torch.randn(n, 1, 7, 7)
    return x, DataLoader(TensorDataset(x, (x.mean(dim=(1, 2, 3)) > 0).long()), batch_size=4)


class Snapshots:
    """A callback keeping a copy of every conv weight at each epoch end / batch end."""

    def __init__(self, base):
        outer = self
        self.epochs: dict[int, dict] = {}
        self.batches: dict[int, dict] = {}

        class Hook(base):
            def on_train_epoch_end(self, trainer, module):
                outer.epochs[trainer.current_epoch] = outer.take(module)

            def on_train_batch_end(self, trainer, module, *args):
                outer.batches[trainer.global_step] = outer.take(module)

        self.callback = Hook()

    @staticmethod
    def take(module):
        return {f"{n}/weight": to_numpy(m.weight).copy() for n, m in module.named_modules()
                if isinstance(m, nn.Conv2d)}


def served(client, run, tag, step):
    query = {"run": run, "tag": tag, "step": str(step)}
    response = client.get(PREFIX + "tensor", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return load_npy(response.get_data()), json.loads(response.headers["X-Convfilters-Header"])


def steps_of(client, run, tag):
    response = client.get(PREFIX + "steps", query_string={"run": run, "tag": tag})
    assert response.status_code == 200, response.get_data(as_text=True)
    return [s["step"] for s in json.loads(response.get_data())]


def trainer(package, tmp_path, callbacks, **kwargs):
    options = dict(accelerator="cpu", max_epochs=3, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False,
                   logger=package.loggers.TensorBoardLogger(str(tmp_path), name="fit"))
    options.update(kwargs)
    return package.Trainer(callbacks=callbacks, **options)


@pytest.mark.parametrize("package_name", ["lightning.pytorch", "pytorch_lightning"])
def test_epochs_logged_into_the_tensorboard_logger_exactly(tmp_path, package_name):
    package = pytest.importorskip(package_name)
    x, data = make_data()
    module = make_module(package.LightningModule)
    snaps = Snapshots(package.Callback)
    callback = FiltersCallback(sample_inputs=x, batch_size=5, max_samples=3)
    t = trainer(package, tmp_path, [callback, snaps.callback])
    t.fit(module, data)
    run = "fit/version_0"
    assert Path(t.logger.log_dir) == tmp_path / run
    client = plugin_client(tmp_path)
    for tag in ("features.0/weight", "features.3/weight"):
        assert steps_of(client, run, tag) == [0, 1, 2]
        for epoch, weights in snaps.epochs.items():
            got, header = served(client, run, tag, epoch)
            assert header["layout"] == "OIHW"
            assert got.dtype == weights[tag].dtype
            assert got.tobytes() == weights[tag].tobytes()
    got, header = served(client, run, "head/weight", 2)  # Linear too, as log_kernels does
    assert header["layout"] == "OI"
    assert got.tobytes() == to_numpy(module.head.weight).tobytes()
    # activations: the final weights on sample_inputs in batches of 5, in eval mode (batch
    # norm with its running statistics), the first 3 samples' maps
    module.eval()
    with torch.no_grad():
        first = module.features(x[:5])[:3]
    got, header = served(client, run, "features.3/activation", 2)
    assert header["layout"] == "NCHW"
    assert got.tobytes() == first.numpy().tobytes()


def test_float_sample_inputs_take_the_modules_dtype(tmp_path):
    x, data = make_data()
    module = make_module(pl.LightningModule).double()  # float64 weights, float32 inputs
    callback = FiltersCallback(sample_inputs=x, max_samples=2, raise_errors=True)
    t = trainer(pl, tmp_path, [callback], max_epochs=1)
    t.fit(module, DataLoader(TensorDataset(x.double(), data.dataset.tensors[1]), batch_size=4))
    module.eval()
    with torch.no_grad():
        want = module.features(x[:2].double())
    got, _ = served(plugin_client(tmp_path), "fit/version_0", "features.3/activation", 0)
    assert got.dtype == want.numpy().dtype and got.tobytes() == want.numpy().tobytes()


def test_every_n_batches_steps_are_global_steps_and_the_end_is_logged(tmp_path):
    x, data = make_data()  # 3 batches per epoch
    module = make_module(pl.LightningModule)
    snaps = Snapshots(pl.Callback)
    t = trainer(pl, tmp_path, [FiltersCallback(every_n_batches=4, modules=["features.0"]),
                               snaps.callback], max_epochs=2)
    t.fit(module, data)
    client = plugin_client(tmp_path)
    assert steps_of(client, "fit/version_0", "features.0/weight") == [4, 6]  # 6: the end
    for step in (4, 6):
        got, _ = served(client, "fit/version_0", "features.0/weight", step)
        assert got.tobytes() == snaps.batches[step]["features.0/weight"].tobytes()


def test_other_logger_needs_log_dir(tmp_path):
    x, data = make_data()
    csv = pl.loggers.CSVLogger(str(tmp_path / "csv"))
    with pytest.raises(ValueError, match="no TensorBoardLogger.*CSVLogger.*log_dir"):
        trainer(pl, tmp_path, [FiltersCallback()], logger=csv).fit(make_module(pl.LightningModule),
                                                                    data)
    t = trainer(pl, tmp_path, [FiltersCallback(tmp_path / "filters")], logger=csv, max_epochs=1)
    t.fit(make_module(pl.LightningModule), data)
    assert steps_of(plugin_client(tmp_path), "filters", "features.3/weight") == [0]


def test_errors_warn_once_or_raise(tmp_path):
    x, data = make_data()
    bad = torch.zeros(2, 5, 7, 7)  # 5 channels: the first conv takes 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(pl, tmp_path, [FiltersCallback(sample_inputs=bad)]).fit(
            make_module(pl.LightningModule), data)
    ours = [w for w in caught if "FiltersCallback" in str(w.message)]
    assert len(ours) == 1 and "sample_inputs" in str(ours[0].message)
    assert steps_of(plugin_client(tmp_path), "fit/version_0", "features.0/weight") == [0, 1, 2]
    with pytest.raises(RuntimeError):
        trainer(pl, tmp_path, [FiltersCallback(sample_inputs=bad, raise_errors=True)]).fit(
            make_module(pl.LightningModule), data)
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        FiltersCallback(every_n_epochs=0)
    with pytest.raises(ValueError, match="not submodules"):
        trainer(pl, tmp_path, [FiltersCallback(modules=["nope"])]).fit(
            make_module(pl.LightningModule), data)


def test_a_failing_module_is_warned_once_per_tag_and_the_others_are_logged(tmp_path):
    _, data = make_data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # filter 3 exists in features.0 (4 filters) only
        trainer(pl, tmp_path, [FiltersCallback(max_filters=[3])]).fit(
            make_module(pl.LightningModule), data)
    ours = sorted(str(w.message) for w in caught if "log_kernels" in str(w.message))
    assert len(ours) == 2, ours  # once per tag over 3 epochs, not once for the whole call
    assert "'features.3/weight'" in ours[0] and "'head/weight'" in ours[1]
    client = plugin_client(tmp_path)
    assert steps_of(client, "fit/version_0", "features.0/weight") == [0, 1, 2]
    with pytest.raises(ValueError, match=r"max_filters=\[\] must be a non-empty list"):
        FiltersCallback(max_filters=[])
    with pytest.raises(ValueError, match=r"dtype='int8' cannot be stored for a model's float"):
        FiltersCallback(dtype="int8")


def our_files(root: Path) -> list[Path]:
    """Event files under `root` holding records of the Filters plugin."""
    found = []
    for path in root.rglob("events.out.tfevents*"):
        for event in EventFileLoader(str(path)).Load():
            if any(v.metadata.plugin_data.plugin_name == PLUGIN_NAME for v in event.summary.value):
                found.append(path)
                break
    return found


def test_ddp_two_gloo_ranks_write_once(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", GLOO_SOCKET_IFNAME="lo")
    done = subprocess.run([sys.executable, str(WORKER), str(tmp_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "rank0.done").exists() and (tmp_path / "rank1.done").exists()
    files = our_files(tmp_path)
    assert len(files) == 1, files
    run = files[0].parent.relative_to(tmp_path / "logs").as_posix()
    weights = torch.load(tmp_path / "weights.pt")
    client = plugin_client(tmp_path / "logs")
    assert steps_of(client, run, "conv/weight") == [0, 1]
    got, _ = served(client, run, "conv/weight", 1)
    assert got.tobytes() == weights["conv.weight"].numpy().tobytes()
    got, _ = served(client, run, "conv/activation", 1)
    assert got.shape == (2, 4, 4, 4)


def test_gradient_accumulation_logs_each_global_step_once(tmp_path):
    from tb_convfilters import reader

    x, data = make_data()  # 3 batches per epoch, one optimizer step per epoch
    t = trainer(pl, tmp_path, [FiltersCallback(every_n_batches=1, modules=["features.0"])],
                max_epochs=2, accumulate_grad_batches=3)
    t.fit(make_module(pl.LightningModule), data)
    steps = [e.step for e in reader.entries(tmp_path, tag="features.0/weight")]
    assert sorted(steps) == [0, 1, 2]


def test_a_failed_write_never_hides_the_trainers_exception_nor_stops_a_good_fit(tmp_path):
    import shutil

    _, data = make_data()  # 3 batches per epoch
    callback = FiltersCallback(every_n_batches=1, modules=["features.0"])

    class Failing(type(make_module(pl.LightningModule))):
        boom = True

        def training_step(self, batch, i):
            step = self.trainer.global_step
            if step == 2:  # the records so far are on disk; the next one fails: its file is gone
                callback._logger.writer.flush()
                shutil.rmtree(self.trainer.logger.log_dir)
            if step == 3 and self.boom:
                raise KeyError("the user's own error")
            return super().training_step(batch, i)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(KeyError, match="the user's own error"):
            trainer(pl, tmp_path, [callback]).fit(Failing(), data)
    ours = [str(w.message) for w in caught if "FiltersCallback" in str(w.message)]
    assert any("could not write tag 'features.0/weight' step" in m for m in ours), ours

    module = Failing()  # no exception: fit returns, with the failure warned
    module.boom = False
    with pytest.warns(RuntimeWarning, match=r"closing the event file at the end of training: "
                      r"WriterError: .*tag 'features.0/weight' step"):
        trainer(pl, tmp_path / "2", [callback], max_epochs=1).fit(module, data)
