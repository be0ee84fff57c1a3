"""Lightning's FiltersCallback(grads=True): gradient norms saved in on_after_backward and
stored with the kernels of the steps it logs."""

from __future__ import annotations

import numpy as np
import pytest

pl = pytest.importorskip("lightning.pytorch")
from test_lightning import make_data, make_module, trainer  # noqa: E402

from tb_convfilters import dynamics  # noqa: E402
from tb_convfilters.lightning import FiltersCallback  # noqa: E402


class Grads(pl.Callback):
    """Each batch's conv gradients, by the global step the optimizer step will make."""

    def __init__(self):
        self.by_step = {}

    def on_after_backward(self, trainer, module):
        grad = module.features[0].weight.grad.numpy().copy()
        self.by_step[trainer.global_step + 1] = grad


@pytest.mark.parametrize("every", [{"every_n_batches": 2}, {}])
def test_grad_norms_of_the_logged_steps(tmp_path, every):
    x, data = make_data()  # 3 batches per epoch, 2 epochs
    grads = Grads()
    callback = FiltersCallback(modules=["features.0"], grads=True, **every)
    trainer(pl, tmp_path, [grads, callback], max_epochs=2).fit(
        make_module(pl.LightningModule), data
    )
    steps, norms = dynamics.grad_norms(tmp_path, "fit/version_0", "features.0/weight")
    d = dynamics.read(tmp_path, "fit/version_0", "features.0/weight")
    if every:
        assert list(steps) == [2, 4, 6] and d.intervals == [2, 2]
        updates = list(steps)
    else:  # epochs 0 and 1: the last batch of each (global steps 3 and 6)
        assert list(steps) == [0, 1] and d.intervals == [3]
        updates = [3, 6]
    want = [np.linalg.norm(grads.by_step[u].reshape(4, -1), axis=1) for u in updates]
    np.testing.assert_allclose(norms, want, rtol=1e-5)
