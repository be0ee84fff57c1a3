"""plot.examples draws each filter's dataset examples as the dashboard draws them.

The pixel rule (``plot.example_pixels``) is checked on hand-computed pixels; the
Figure on a real logdir written by ``Writer.activation(inputs=, receptive_field=)``.
"""

from __future__ import annotations

import numpy as np

from tb_convfilters import ReceptiveField, Writer, reader


def _logdir(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 8, 8, 3)).astype(np.float32)
    x[0, 0, 0, 0], x[1, 0, 0, 1] = -5.0, 7.0  # the probe inputs' range: [-5, 7]
    a = rng.normal(size=(6, 4, 4, 5)).astype(np.float32)
    field = ReceptiveField((-1, -1), (2, 2), (3, 3))
    with Writer(tmp_path / "run") as w:
        w.activation("known/act", a, 1, inputs=x, examples=3, receptive_field=field)
        w.activation("unknown/act", a, 1, inputs=x, examples=3)
        w.activation("gray/act", a, 1, inputs=x[..., :1], examples=2, receptive_field=field)
    return x, a, field


def test_input_range_is_the_stored_probe_inputs_range(tmp_path):
    x, _, _ = _logdir(tmp_path)
    ex = reader.examples(tmp_path, "run", "known/act")
    assert ex.input_range == (-5.0, 7.0)
    assert reader.examples(tmp_path, "run", "gray/act").input_range == (
        float(x[..., :1].min()),
        float(x[..., :1].max()),
    )
