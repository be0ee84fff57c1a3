"""tb_convfilters.transformers.FiltersCallback in real Hugging Face Trainer runs (CPU)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it
import torch  # noqa: E402
from support import free_port, plugin_client  # noqa: E402
from trainer_support import filters_beside_scalars, our_files, served, steps_of  # noqa: E402
from transformers import (  # noqa: E402
    ConvNextConfig,
    ConvNextForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from tb_convfilters.torch import to_numpy  # noqa: E402
from tb_convfilters.transformers import FiltersCallback  # noqa: E402

WORKER = Path(__file__).with_name("transformers_ddp_worker.py")
RESNET_FIRST = "resnet.embedder.embedder.convolution"
CONVNEXT_FIRST = "convnext.embeddings.patch_embeddings"


def resnet():
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                          layer_type="basic", num_labels=2)
    return ResNetForImageClassification(config)


def convnext():
    config = ConvNextConfig(num_channels=3, patch_size=2, hidden_sizes=[8, 16], depths=[1, 1],
                            num_stages=2, num_labels=2)
    return ConvNextForImageClassification(config)


def make_data(n=16):
    torch.manual_seed(0)
    x = torch.randn(n, 3, 16, 16)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    return x, [{"pixel_values": a, "labels": b} for a, b in zip(x, y, strict=True)]


class Snapshots(TrainerCallback):
    """Every conv/linear weight at each of the Trainer's logs and at the end, by global step."""

    def __init__(self):
        self.steps: dict[int, dict] = {}

    def take(self, state, model):
        self.steps[state.global_step] = {
            f"{n}/weight": to_numpy(m.weight).copy() for n, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)}

    def on_log(self, args, state, control, model=None, **kwargs):
        self.take(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.take(state, model)


def train(tmp_path, model, data, callbacks, **options):
    settings = dict(report_to="tensorboard", logging_steps=3, num_train_epochs=2,
                    per_device_train_batch_size=4, use_cpu=True, save_strategy="no",
                    disable_tqdm=True, seed=0)
    settings.update(options)
    args = TrainingArguments(str(tmp_path / "out"), **settings)
    trainer = Trainer(model, args, train_dataset=data, callbacks=callbacks)
    trainer.train()
    return trainer


def tensorboard_run(trainer, root):
    """The Trainer's TensorBoard directory, as a run name under `root`."""
    (tb,) = [c for c in trainer.callback_handler.callbacks
             if type(c).__name__ == "TensorBoardCallback"]
    return Path(tb.logging_dir).relative_to(root).as_posix()


@pytest.mark.parametrize("build,first", [(resnet, RESNET_FIRST), (convnext, CONVNEXT_FIRST)])
def test_kernels_exact_at_the_trainers_logging_steps_in_its_tensorboard_log(
        tmp_path, build, first):
    x, data = make_data()  # 4 steps an epoch, 8 in all; the Trainer logs at 3, 6 and the end
    model = build()
    snaps = Snapshots()
    callback = FiltersCallback(sample_inputs=x[:6], batch_size=4, max_samples=2)
    trainer = train(tmp_path, model, data, [callback, snaps])
    run = tensorboard_run(trainer, tmp_path)
    assert run.startswith("out/runs/")
    (ours,) = our_files(tmp_path)
    assert ours.parent == tmp_path / run  # beside the Trainer's own event file
    client = plugin_client(tmp_path)
    assert sorted(snaps.steps) == [3, 6, 8]
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert first in convs and len(convs) >= 4
    for name in [*convs, "classifier.1" if build is resnet else "classifier"]:
        tag = f"{name}/weight"
        assert steps_of(client, run, tag) == [3, 6, 8], tag
        for step, weights in snaps.steps.items():
            got, header = served(client, run, tag, step)
            assert header["layout"] == ("OIHW" if name in convs else "OI")
            assert got.dtype == weights[tag].dtype and got.tobytes() == weights[tag].tobytes()
    # activations: the final weights on sample_inputs in batches of 4, eval mode
    model.eval()
    with torch.no_grad():
        want = model.get_submodule(first)(x[:4])[:2]
    got, header = served(client, run, f"{first}/activation", 8)
    assert header["layout"] == "NCHW"
    assert got.tobytes() == want.numpy().tobytes()
    assert steps_of(client, run, f"{first}/activation") == [3, 6, 8]


def test_every_n_steps_and_epochs(tmp_path):
    x, data = make_data()
    snaps = Snapshots()
    train(tmp_path / "s", resnet(), data, [snaps, FiltersCallback(every_n_steps=5)],
          logging_steps=1)
    (ours,) = our_files(tmp_path / "s")
    run = ours.parent.relative_to(tmp_path / "s").as_posix()
    client = plugin_client(tmp_path / "s")
    tag = f"{RESNET_FIRST}/weight"
    assert steps_of(client, run, tag) == [5, 8]  # 8: the end
    for step in (5, 8):
        assert served(client, run, tag, step)[0].tobytes() == snaps.steps[step][tag].tobytes()
    train(tmp_path / "e", resnet(), data, [FiltersCallback(every_n_epochs=1)], logging_steps=3)
    (ours,) = our_files(tmp_path / "e")
    run = ours.parent.relative_to(tmp_path / "e").as_posix()
    assert steps_of(plugin_client(tmp_path / "e"), run, tag) == [4, 8]  # epoch ends
    with pytest.raises(ValueError, match="every_n_steps=2 and every_n_epochs=1: give one"):
        FiltersCallback(every_n_steps=2, every_n_epochs=1)
    with pytest.raises(ValueError, match="every_n_steps=0"):
        FiltersCallback(every_n_steps=0)


def test_without_tensorboard_a_log_dir_is_needed(tmp_path):
    _, data = make_data()
    with pytest.raises(ValueError, match=r"no TensorBoard log \(report_to=\[\]\).*log_dir"):
        train(tmp_path, resnet(), data, [FiltersCallback()], report_to="none")
    train(tmp_path, resnet(), data, [FiltersCallback(tmp_path / "filters")], report_to="none",
          num_train_epochs=1)
    assert steps_of(plugin_client(tmp_path), "filters", f"{RESNET_FIRST}/weight") == [3, 4]
    with pytest.raises(ValueError, match="not submodules"):
        train(tmp_path, resnet(), data, [FiltersCallback(modules=["nope"])])


def test_a_failing_layer_is_warned_once_and_training_goes_on(tmp_path):
    _, data = make_data()
    bad = torch.zeros(2, 5, 16, 16)  # 5 channels: the model takes 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # filter 9 exists in the 16-filter convs only
        trainer = train(tmp_path, resnet(), data,
                        [FiltersCallback(sample_inputs=bad, max_filters=[9])])
    ours = [str(w.message) for w in caught if "FiltersCallback" in str(w.message)
            or "log_kernels" in str(w.message)]
    assert sum("sample_inputs" in m for m in ours) == 1, ours
    assert sum(f"'{RESNET_FIRST}/weight'" in m for m in ours) == 1, ours  # 3 steps, one warning
    assert trainer.state.global_step == 8
    run = tensorboard_run(trainer, tmp_path)
    client = plugin_client(tmp_path)
    assert steps_of(client, run, "resnet.encoder.stages.1.layers.0.layer.0.convolution/weight") \
        == [3, 6, 8]
    with pytest.raises(ValueError, match="channel dimension"):
        train(tmp_path / "2", resnet(), data,
              [FiltersCallback(sample_inputs=bad, raise_errors=True)])
    with pytest.raises(ValueError, match=r"dtype='int8' cannot be stored"):
        FiltersCallback(dtype="int8")


def test_a_removed_log_directory_is_warned_and_training_goes_on(tmp_path):
    _, data = make_data()
    callback = FiltersCallback(modules=[RESNET_FIRST])

    class Remove(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 4:  # the records of step 3 are on disk; the next fail
                callback._logger.writer.flush()
                shutil.rmtree(callback._dir)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = train(tmp_path, resnet(), data, [callback, Remove()])
    assert trainer.state.global_step == 8
    ours = [str(w.message) for w in caught if "could not write" in str(w.message)]
    assert len(ours) == 1 and f"tag '{RESNET_FIRST}/weight' step 6" in ours[0], ours
    run = Path(callback._dir).relative_to(tmp_path).as_posix()  # the next record: a new file
    assert steps_of(plugin_client(tmp_path), run, f"{RESNET_FIRST}/weight") == [8]


def test_tensorboard_shows_the_filters_tab_beside_the_trainers_scalars(tmp_path):
    x, data = make_data()
    trainer = train(tmp_path, resnet(), data, [FiltersCallback(sample_inputs=x[:4])],
                    num_train_epochs=1)
    filters_beside_scalars(tmp_path, tensorboard_run(trainer, tmp_path),
                           f"{RESNET_FIRST}/weight", "train/loss")


def test_ddp_two_gloo_processes_write_once(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", GLOO_SOCKET_IFNAME="lo")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                      env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port()), str(WORKER), str(tmp_path)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "rank0.done").read_text() == (tmp_path / "rank1.done").read_text() == "2"
    files = our_files(tmp_path)
    assert len(files) == 1, files
    run = files[0].parent.relative_to(tmp_path).as_posix()
    weights = torch.load(tmp_path / "weights.pt")
    client = plugin_client(tmp_path)
    tag = f"{RESNET_FIRST}/weight"
    assert steps_of(client, run, tag) == [1, 2]
    got, _ = served(client, run, tag, 2)
    assert got.tobytes() == weights[f"{RESNET_FIRST}.weight"].numpy().tobytes()
    got, _ = served(client, run, f"{RESNET_FIRST}/activation", 2)
    assert got.shape == (2, 4, 6, 6)


def test_import_names_the_extra_when_transformers_is_missing():
    code = ("import sys; sys.modules['transformers'] = None\n"
            "import tb_convfilters, tb_convfilters.torch\n"
            "try:\n    import tb_convfilters.transformers\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pip install 'tb-convfilters[transformers]'" in out, out
