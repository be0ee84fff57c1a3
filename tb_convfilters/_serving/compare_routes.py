"""The plugin's ``align`` and ``similarity`` routes (``compare`` over the plugin's source).

`CompareRoutes` is held by ``plugin.ConvFiltersPlugin``: it reads through the plugin's
data source (the index or TensorBoard's data provider, see ``data_sources``), so both
modes answer alike. Logging order within a run: the order of the records in the event files
(index), or of their wall times (provider).
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from tb_convfilters import compare
from tb_convfilters._record import metadata
from tb_convfilters._serving import index
from tb_convfilters._serving.data_sources import HttpError, Source, array_of, header_of, step_at
from tb_convfilters._serving.data_sources import quoted as _name

# (run, step) pairs one similarity request may compare (bounds the answer's size).
MAX_SIMILARITY_ITEMS = 64
# Memory of one similarity request's CKA (TensorBoard flag --convfilters_max_similarity_mb;
# each record read comes on top, one at a time) and its multiply-adds: about 10 s on two
# busy cores of a small VM.
DEFAULT_MAX_SIMILARITY_MB = compare.DEFAULT_MAX_BYTES >> 20
MAX_SIMILARITY_WORK = 5 * 10**10
_CACHE_SIZE = 64


def _log_order(datum: Any) -> tuple:
    if isinstance(datum, index.Loc):
        return (datum.path, datum.start)
    return (datum.wall_time,)


class CompareRoutes:
    """``align_impl`` and ``similarity_impl`` for the plugin (see ``frontend/http_api.md``):
    tensors of at most `max_tensor_bytes` each, CKA within `max_similarity_bytes`."""

    def __init__(self, source: Source, max_tensor_bytes: int, max_similarity_bytes: int):
        self.source = source
        self.max_tensor_bytes = max_tensor_bytes
        self.max_similarity_bytes = max_similarity_bytes
        self._align_cache: OrderedDict = OrderedDict()
        self._align_lock = threading.Lock()

    def _array(self, ctx: Any, datum: Any, header: dict, run: str, tag: str) -> np.ndarray:
        return array_of(self.source, ctx, datum, header, run, tag, self.max_tensor_bytes)

    def _kernel_tags(self, ctx: Any, experiment: str, run: str, base: str, tag: str) -> list[str]:
        """Kernel tags both runs logged (404 for an unknown run or tag, 400 for a non-kernel)."""
        listing = self.source.listing(ctx, experiment)
        for name in (base, run):
            if name not in listing:
                raise HttpError(404, f"run {_name(name)} not found")
            if tag not in listing[name]:
                raise HttpError(404, f"tag {_name(tag)} not found in run {_name(name)}")
        kernels = []
        for t, series in listing[base].items():
            info = metadata.parse_plugin_metadata(series.content)
            if info is not None and info["kind"] == "kernel" and t in listing[run]:
                kernels.append(t)
        if tag not in kernels:
            raise HttpError(400, f"tag {_name(tag)} is not a kernel; align matches kernels only")
        return kernels

    def align_impl(
        self, ctx: Any, experiment: str, run: str, base: str, tag: str, step: int | None
    ) -> dict:
        """``run``'s filters of `tag` matched to ``base``'s (``compare.align`` over the source)."""
        kernels = self._kernel_tags(ctx, experiment, run, base, tag)
        picked = []  # (order, tag, datum of base, datum of run) of the layers at `step`
        for t in kernels:
            try:
                pair = [step_at(self.source, ctx, experiment, r, t, step) for r in (base, run)]
            except HttpError:
                if t == tag:
                    raise
                continue  # a layer without this step does not take part
            picked.append((_log_order(pair[0]), t, *pair))
        picked.sort(key=lambda p: p[0])
        upto = [p for p in picked if p[1] == tag]
        picked = picked[: picked.index(upto[0]) + 1]
        # Only the layers since the last break of the chain matter: find it from the headers.
        headers = [
            (header_of(self.source, ctx, b, base, t), header_of(self.source, ctx, r, run, t))
            for _, t, b, r in picked
        ]
        start = len(picked) - 1
        while start > 0 and _chains(headers[start - 1], headers[start]):
            start -= 1
        key = (experiment, run, base) + tuple(
            (t, b.step, b.wall_time, r.step, r.wall_time) for _, t, b, r in picked[start:]
        )
        with self._align_lock:
            cached = self._align_cache.get(key)
        if cached is None:
            kernels_of = {}, {}
            for (_, t, b, r), (hb, hr) in zip(picked[start:], headers[start:], strict=True):
                for out, name, datum, header in (
                    (kernels_of[0], base, b, hb),
                    (kernels_of[1], run, r, hr),
                ):
                    out[t] = compare.Kernel(
                        self._array(ctx, datum, header, name, t),
                        header["layout"],
                        "filters" in header or "channels" in header,
                    )
            try:
                matches = compare.align_kernels(*kernels_of, [p[1] for p in picked[start:]])
            except ValueError as e:
                raise HttpError(422, f"runs {_name(base)} and {_name(run)}: {e}") from None
            cached = matches[tag].to_json()
            cached["step"], cached["run_step"] = picked[-1][2].step, picked[-1][3].step
            with self._align_lock:
                self._align_cache[key] = cached
                while len(self._align_cache) > _CACHE_SIZE:
                    self._align_cache.popitem(last=False)
        return cached

    def similarity_impl(
        self, ctx: Any, experiment: str, tag: str, runs: list[str], steps: list[int] | None
    ) -> dict:
        """Linear CKA between every (run, step) pair of activation `tag`."""
        items = []
        for run in runs:
            series = self.source.series(ctx, experiment, run, tag)
            chosen = [d for d in series if steps is None or d.step in steps]
            if not chosen:
                raise HttpError(
                    404, f"none of steps {steps} found in run {_name(run)}, tag {_name(tag)}"
                )
            for datum in chosen:
                header = header_of(self.source, ctx, datum, run, tag)
                if header["kind"] != "activation":
                    raise HttpError(
                        400, f"tag {_name(tag)} holds {header['kind']}s; CKA needs activations"
                    )
                items.append((run, datum, header))
        if len(items) > MAX_SIMILARITY_ITEMS:
            raise HttpError(
                400,
                f"{len(items)} (run, step) pairs asked for; at most {MAX_SIMILARITY_ITEMS}: "
                "pick fewer with steps=S1,S2,...",
            )
        acts = [
            (
                (run, datum.step),
                compare.Activation(
                    None,
                    header["layout"],
                    header.get("samples_digest"),
                    tuple(header["shape"]),
                    functools.partial(self._array, ctx, datum, header, run, tag),
                ),
            )
            for run, datum, header in items
        ]
        try:
            answer = compare.similarity_of(
                acts,
                max_bytes=self.max_similarity_bytes,
                max_work=MAX_SIMILARITY_WORK,
                knob="TensorBoard flag --convfilters_max_similarity_mb",
            )
        except compare.BudgetError as e:
            extra = {"nbytes": e.nbytes, "limit_bytes": e.limit_bytes} if e.limit_bytes else {}
            raise HttpError(413, str(e), **extra) from None
        except ValueError as e:
            raise HttpError(422, str(e)) from None
        return answer.to_json()


def _chains(prev: tuple[dict, dict], this: tuple[dict, dict]) -> bool:
    """Whether `this` layer's input channels can take `prev`'s permutation (as `align_kernels`)."""
    (pb, pr), (tb, tr) = prev, this
    if any("filters" in h or "channels" in h for h in (pb, pr, tb, tr)):
        return False
    n_in = tb["shape"][tb["layout"].index("I")]
    return compare.n_filters(pb["shape"], pb["layout"]) == n_in
