"""The plugin's ``spectra`` and ``spectra_steps`` routes (``tb_convfilters.spectra`` over
the plugin's source).

`SpectraRoutes` is held by ``plugin.ConvFiltersPlugin`` and reads through its data source
(the index or TensorBoard's data provider), one record at a time, each at most the tensor
limit (``--convfilters_max_tensor_mb``, 413 past it). A record's answer is small (two
numbers per filter and the histogram) and kept in an LRU, so the step slider and the
over-steps raster read each record once. The answers are ``frontend/http_api.md``'s.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

from tb_convfilters import spectra
from tb_convfilters._serving.data_sources import HttpError, Source, array_of, header_of, step_at
from tb_convfilters._serving.data_sources import quoted as _name
from tb_convfilters._serving.requests import spread

# Steps one spectra_steps answer holds by default, and at most (its max_steps parameter):
# each is a whole record read, so the bound is the request's time.
DEFAULT_SPECTRA_STEPS = 50
MAX_SPECTRA_STEPS = 200
_CACHE_SIZE = 4096


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _labels(header: dict, n: int) -> list[int]:
    """The original index of each of the record's `n` filters (the grid's labels)."""
    kept = header.get("filters")
    layout = header["layout"]
    if "M" in layout:  # depthwise: filter i*M + m; `filters` keeps input channels i
        m = header["shape"][layout.index("M")]
        rows = kept if kept is not None else range(n // max(m, 1))
        return [int(i) * m + j for i in rows for j in range(m)]
    return [int(i) for i in kept] if kept is not None else list(range(n))


class SpectraRoutes:
    """``spectra_impl`` (one step) and ``spectra_steps_impl`` (coverage over steps)."""

    def __init__(self, source: Source, max_tensor_bytes: int):
        self.source = source
        self.max_tensor_bytes = max_tensor_bytes
        self._cache: OrderedDict[tuple, dict] = OrderedDict()
        self._lock = threading.Lock()

    def _of(self, ctx: Any, experiment: str, run: str, tag: str, datum: Any) -> dict:
        """One record's spectra: ``{step, layout, filters, orientation, frequency, coverage}``."""
        key = (experiment, run, tag, datum.step, datum.wall_time)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        header = header_of(self.source, ctx, datum, run, tag)
        layout = header.get("layout")
        if header.get("kind") != "kernel":
            raise HttpError(
                400, f"tag {_name(tag)} holds {header.get('kind')}s; spectra are of kernels"
            )
        if "H" not in layout or "D" in layout:
            raise HttpError(
                400, f"tag {_name(tag)} has layout {layout}: spectra need 2-D (H, W) kernels"
            )
        array = array_of(self.source, ctx, datum, header, run, tag, self.max_tensor_bytes)
        orientation, frequency = spectra.dominant(array, layout)
        cov = spectra.coverage(array, layout)
        answer = {
            "step": datum.step,
            "layout": layout,
            "filters": _labels(header, len(frequency)),
            "orientation": [_num(v) for v in orientation.tolist()],
            "frequency": [_num(v) for v in frequency.tolist()],
            "counts": cov.counts.tolist(),
            "flat": cov.flat,
            "undefined": cov.undefined,
            "orientation_edges": cov.orientation_edges.tolist(),
            "frequency_edges": cov.frequency_edges.tolist(),
        }
        with self._lock:
            self._cache[key] = answer
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return answer

    def spectra_impl(self, ctx: Any, experiment: str, run: str, tag: str, step: int | None) -> dict:
        """Kernel `tag`'s spectra at `step` (latest if None)."""
        datum = step_at(self.source, ctx, experiment, run, tag, step)
        return self._of(ctx, experiment, run, tag, datum)

    def spectra_steps_impl(
        self,
        ctx: Any,
        experiment: str,
        run: str,
        tag: str,
        max_steps: int = DEFAULT_SPECTRA_STEPS,
    ) -> dict:
        """The coverage at up to `max_steps` steps, spread evenly with the last one."""
        series = self.source.series(ctx, experiment, run, tag)
        if not series:
            raise HttpError(404, f"no steps in run {_name(run)}, tag {_name(tag)}")
        picked = spread(len(series), max_steps, None)
        steps = []
        edges = None
        for datum in (series[i] for i in picked):
            try:
                one = self._of(ctx, experiment, run, tag, datum)
            except HttpError as e:
                if e.status == 400:  # not a 2-D kernel: the whole series is not
                    raise
                steps.append({"step": datum.step, "error": e.message})
                continue
            edges = one
            steps.append(
                {
                    "step": datum.step,
                    "counts": one["counts"],
                    "flat": one["flat"],
                    "undefined": one["undefined"],
                    "filters": len(one["frequency"]),
                }
            )
        return {
            "steps": steps,
            "total_steps": len(series),
            "capped": len(picked) < len(series),
            "orientation_edges": (
                edges["orientation_edges"] if edges else spectra.orientation_edges().tolist()
            ),
            "frequency_edges": (
                edges["frequency_edges"] if edges else list(spectra.FREQUENCY_EDGES)
            ),
        }
