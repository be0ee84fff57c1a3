"""HF Trainer DDP on CPU: ``python -m torch.distributed.run --nproc_per_node 2
transformers_ddp_worker.py OUTDIR``.

Both ranks train a tiny ResNet with FiltersCallback (gloo); the Trainer's TensorBoard
log goes under OUTDIR/out/runs; rank 0 saves the final weights as OUTDIR/weights.pt.
"""

import os
import sys
from pathlib import Path

import torch
from transformers import ResNetConfig, ResNetForImageClassification, Trainer, TrainingArguments

from tb_convfilters.transformers import FiltersCallback


def main(outdir: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 3, 12, 12)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    config = ResNetConfig(num_channels=3, embedding_size=4, hidden_sizes=[4, 8], depths=[1, 1],
                          layer_type="basic", num_labels=2)
    model = ResNetForImageClassification(config)
    args = TrainingArguments(
        str(outdir / "out"), report_to="tensorboard", logging_steps=1, num_train_epochs=1,
        per_device_train_batch_size=4, use_cpu=True, ddp_backend="gloo", save_strategy="no",
        disable_tqdm=True, seed=0,
    )
    data = [{"pixel_values": a, "labels": b} for a, b in zip(x, y, strict=True)]
    trainer = Trainer(model, args, train_dataset=data,
                      callbacks=[FiltersCallback(sample_inputs=x[:2])])
    trainer.train()
    rank = int(os.environ["RANK"])
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                   outdir / "weights.pt")
    (outdir / f"rank{rank}.done").write_text(str(trainer.state.global_step))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
