"""Feature visualization for Keras 3 models (TensorFlow backend only: others raise).

* `filter_patterns`: the input pattern each filter of a layer responds to most
  (gradient ascent on the filter's mean activation, all filters in one batch).
* `projections`: a filter's strongest activation on real inputs, projected back to
  pixel space by guided backprop, deconvnet or the plain gradient.
* `log_patterns`: both, logged with a `tb_convfilters.Writer` for the Filters tab.

Models must have one image input ``(batch, height, width, channels)``; the layer
must output a 2-D feature map ``(batch, height, width, filters)``. A layer inside a
nested model (a backbone) is found as the Keras callback finds it, and visualized
through the inputs of the model that holds it.

Which filters: every ``filters`` / ``max_filters`` argument takes an int N (the
first N filters, all of them when the layer has fewer) or a list of filter indices;
``filters=None`` means all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tb_convfilters._record.arguments import warn_once
from tb_convfilters.vis.models import _filter_indices, _resolve_layer, check_layers
from tb_convfilters.vis.patterns import filter_patterns
from tb_convfilters.vis.projections import METHODS, Method, normalize_projections, projections

__all__ = [
    "DEFAULT_PATTERN_FILTERS",
    "METHODS",
    "Method",
    "check_layers",
    "filter_patterns",
    "log_patterns",
    "normalize_projections",
    "projections",
]

# Patterns cost a gradient ascent per filter: by default the first this many of a layer.
DEFAULT_PATTERN_FILTERS = 64


def log_patterns(
    writer: Any,
    model: keras.Model,
    layers: str | keras.layers.Layer | Sequence[str | keras.layers.Layer],
    step: int,
    *,
    max_filters: int | Sequence[int] | None = None,
    projection_inputs: Any = None,
    method: Method = "guided_backprop",
    dtype: str | None = None,
    **pattern_options: Any,
) -> dict[str, np.ndarray]:
    """Logs ``<layer>/pattern`` (and ``<layer>/projection``) for each of `layers` at `step`.

    Args:
      writer: a `tb_convfilters.Writer` (anything with its ``patterns`` method).
      model, layers: the model and the layers (names or objects, nested models' too).
      max_filters: the first N filters of each layer, or a list of filter indices.
        Default: the first ``DEFAULT_PATTERN_FILTERS`` (64), with a warning (once per
        layer) when a layer has more.
      projection_inputs: images ``(n, h, w, c)``; if given, their projections are
        logged too, input-major: image ``i * n_filters + j`` is input i, filter j.
      method: projection method, see `projections`.
      dtype: stored dtype, e.g. ``"float16"`` (halves storage); default the writer's.
      pattern_options: passed to `filter_patterns` (size, steps, jitter, blur, ...).

    Returns:
      ``{tag: images}`` as computed (float32, before any dtype conversion).
    """
    logged: dict[str, np.ndarray] = {}
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    for _, target in [_resolve_layer(model, layer) for layer in layers]:
        n = int(target.output.shape[-1])
        if max_filters is None:
            indices = list(range(min(DEFAULT_PATTERN_FILTERS, n)))
            if n > DEFAULT_PATTERN_FILTERS:
                warn_once(
                    ("patterns", target.name, n),
                    f"log_patterns: layer {target.name!r} has {n} filters; logged the patterns "
                    f"of the first {DEFAULT_PATTERN_FILTERS}. Pass max_filters={n} (or a list "
                    "of indices) to choose",
                )
        else:
            indices = _filter_indices(max_filters, target, "max_filters")
        tag = f"{target.name}/pattern"
        logged[tag] = filter_patterns(model, target, indices, **pattern_options)
        writer.patterns(
            tag,
            logged[tag],
            step,
            filters=indices,
            dtype=dtype,
            description=f"Activation-maximization patterns of layer `{target.name}`.",
        )
        if projection_inputs is not None:
            proj = projections(model, target, projection_inputs, indices, method=method)
            tag = f"{target.name}/projection"
            logged[tag] = proj.reshape(-1, *proj.shape[2:])
            writer.patterns(
                tag,
                logged[tag],
                step,
                filters=indices * proj.shape[0],
                kind="projection",
                dtype=dtype,
                description=(
                    f"{method} projections of layer `{target.name}` for {proj.shape[0]} inputs: "
                    f"image i * {len(indices)} + j is input i, filter `filters[j]`."
                ),
            )
    return logged
