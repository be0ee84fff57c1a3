"""One tiny YOLO training: ``python ultralytics_worker.py ROOT WITH_FILTERS``.

Writes a dataset (4 + 4 images with one box each, labels, data.yaml) and a small
model YAML under ROOT, trains 2 epochs on the CPU into ROOT/runs/train with
ultralytics' TensorBoard logging on (settings under ROOT/cfg); with WITH_FILTERS=1
adds ``tb_convfilters.ultralytics.add_filters`` and saves the trained model's conv
weights at each epoch end (by TensorBoard step) as ROOT/snapshots.pt.
"""

import os
import sys
from pathlib import Path

import numpy as np

MODEL = """nc: 1
backbone:
  - [-1, 1, Conv, [8, 3, 2]]
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, C2f, [16, True]]
  - [-1, 1, Conv, [16, 3, 2]]
head:
  - [[3], 1, Detect, [nc]]
"""


def write_data(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    data = root / "data"
    for split in ("train", "val"):
        (data / "images" / split).mkdir(parents=True, exist_ok=True)
        (data / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            image = (rng.random((64, 64, 3)) * 60).astype(np.uint8)
            x0, y0 = rng.integers(8, 32, 2)
            image[y0 : y0 + 20, x0 : x0 + 20] = 220
            Image.fromarray(image).save(data / "images" / split / f"{i}.png")
            box = f"0 {(x0 + 10) / 64} {(y0 + 10) / 64} {20 / 64} {20 / 64}\n"
            (data / "labels" / split / f"{i}.txt").write_text(box)
    path = root / "data.yaml"
    path.write_text(f"path: {data}\ntrain: images/train\nval: images/val\nnames:\n  0: box\n")
    return path


def main(root: Path, with_filters: bool) -> None:
    os.environ["YOLO_CONFIG_DIR"] = str(root / "cfg")  # read when ultralytics is imported
    data = write_data(root)
    (root / "tiny.yaml").write_text(MODEL)
    import torch
    from ultralytics import YOLO, settings

    settings.update({"tensorboard": True})
    model = YOLO(str(root / "tiny.yaml"))
    snapshots = {}
    if with_filters:
        from tb_convfilters.ultralytics import add_filters

        add_filters(model, sample_inputs=torch.rand(3, 3, 64, 64, generator=torch.Generator()
                                                    .manual_seed(1)), batch_size=2, max_samples=2)

        def keep(trainer):
            snapshots[trainer.epoch + 1] = {
                f"{n}/weight": m.weight.detach().clone()
                for n, m in trainer.model.named_modules() if isinstance(m, torch.nn.Conv2d)}

        model.add_callback("on_train_epoch_end", keep)
    model.train(data=str(data), epochs=2, imgsz=64, batch=2, workers=0, device="cpu",
                plots=False, seed=0, deterministic=True, amp=False, project=str(root / "runs"),
                name="train", exist_ok=True, verbose=False)
    torch.save(snapshots, root / "snapshots.pt")
    (root / "save_dir.txt").write_text(str(model.trainer.save_dir))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] == "1")
