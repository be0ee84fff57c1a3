"""Worker processes for test_distributed.py: ``python distributed_workers.py KIND LOGDIR OUTDIR``.

KIND is ``keras`` (one worker of a tf.distribute.MultiWorkerMirroredStrategy cluster,
from TF_CONFIG) or ``torch`` (one rank of a DistributedDataParallel job, from RANK,
WORLD_SIZE and MASTER_PORT). Each trains a tiny CNN for two epochs on synthetic data,
logging with tb_convfilters on every worker, and saves its final weights to OUTDIR.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

EPOCHS = 2


def keras_worker(logdir: str, outdir: str) -> None:
    import keras
    import tensorflow as tf

    from tb_convfilters.keras import FiltersCallback

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
        x = keras.layers.Conv2D(3, 3, activation="relu", name="conv2")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
        optimizer = keras.optimizers.SGD(0.5)
        optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)  # the same data everywhere; each worker gets its shard
    images = rng.normal(size=(32, 8, 8, 1)).astype(np.float32)
    labels = (images[:, :4].mean(axis=(1, 2, 3)) > 0).astype(np.int32)
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    )
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")

    @tf.function
    def train_step(x, y):
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True)) / 8  # global batch
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)

        strategy.run(step, args=(x, y))

    # Keras 3's fit() fails under MultiWorkerMirroredStrategy (keras-team/keras#20585),
    # so this is the custom loop such a user writes, driving the callback's hooks.
    callback = FiltersCallback(logdir, sample_inputs=images[:2], examples=0)
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(EPOCHS):
        for x, y in dataset:
            train_step(x, y)
        callback.on_epoch_end(epoch)
    callback.on_train_end()
    np.savez(
        os.path.join(outdir, f"worker{task}.npz"),
        **{layer: model.get_layer(layer).kernel.numpy() for layer in ("conv1", "conv2")},
    )


def torch_worker(logdir: str, outdir: str) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    from tb_convfilters.torch import log_activations, log_kernels

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{os.environ['MASTER_PORT']}",
        rank=rank,
        world_size=world,
    )

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3)
            self.conv2 = nn.Conv2d(4, 3, 3)
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            return self.head(x.mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(Net())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    generator = torch.Generator().manual_seed(rank)  # each rank its own data
    images = torch.randn(16, 1, 8, 8, generator=generator)
    labels = (images[:, :, :4].mean(dim=(1, 2, 3)) > 0).long()
    sample = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(99))
    written = []
    for epoch in range(EPOCHS):
        for i in range(0, 16, 4):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[i : i + 4]), labels[i : i + 4]).backward()
            optimizer.step()
        # every rank calls the helpers with the same arguments, as DDP code does
        written += log_kernels(logdir, model, epoch)
        with torch.no_grad(), log_activations(logdir, model, epoch, max_samples=2) as tags:
            model(sample)
        written += tags
    weights = {name: p.detach().numpy() for name, p in model.module.named_parameters()}
    np.savez(os.path.join(outdir, f"rank{rank}.npz"), **weights)
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(written, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    kind, logdir, outdir = sys.argv[1:]
    {"keras": keras_worker, "torch": torch_worker}[kind](logdir, outdir)
