"""Lightning DDP on CPU: `python lightning_ddp_worker.py OUTDIR` (Lightning starts rank 1).

Both ranks run FiltersCallback into the default TensorBoardLogger under OUTDIR/logs;
rank 0 saves the final weights as OUTDIR/weights.pt.
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tb_convfilters.lightning import FiltersCallback


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def main(outdir: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 1, 6, 6)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    model = Tiny()
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=2,
        default_root_dir=str(outdir / "logs"), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[FiltersCallback(sample_inputs=x[:2])],
    )
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=4))
    if trainer.is_global_zero:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                   outdir / "weights.pt")
    (outdir / f"rank{trainer.global_rank}.done").write_text(trainer.logger.log_dir)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
