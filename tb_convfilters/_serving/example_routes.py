"""The plugin's ``examples`` route: an activation's dataset examples at one step.

`ExampleRoutes` is held by ``plugin.ConvFiltersPlugin`` and reads through its data
source (the index or TensorBoard's data provider). The examples record is small; the
probe inputs record it refers to can be hundreds of MB, so it is read (and its CRC
checked) once and kept decoded in a byte-bounded LRU, and the crops one request
returns are bounded too (413 past the limit). The answer is ``frontend/http_api.md``'s.
"""

from __future__ import annotations

import base64
import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from tb_convfilters._record import encoding
from tb_convfilters._record import examples as _examples
from tb_convfilters._serving.data_sources import HttpError, Source, header_of, step_at
from tb_convfilters._serving.data_sources import quoted as _name

# Crops (and whole inputs) one examples request may return
# (TensorBoard flag --convfilters_max_examples_mb).
DEFAULT_MAX_EXAMPLES_MB = 32
# Decoded probe inputs kept between requests (least recently used first out).
INPUTS_CACHE_BYTES = 512 << 20
# Rows one request may ask for whole inputs of (the detail view asks for one).
MAX_WHOLE_ROWS = 16
# Dtypes sent as they are stored; others (bfloat16) are widened to float32, exactly.
_SENT_DTYPES = ("float16", "float32", "float64", "uint8", "int8", "uint16", "int16", "int32")


def binary(array: np.ndarray) -> dict:
    """`array` as ``{"dtype", "shape", "data"}``: its little-endian bytes in base64."""
    a = np.asarray(array)
    if a.dtype.name not in _SENT_DTYPES:
        a = a.astype(np.float32)
    a = np.ascontiguousarray(a, a.dtype.newbyteorder("<"))
    return {
        "dtype": a.dtype.name,
        "shape": list(a.shape),
        "data": base64.b64encode(a.tobytes()).decode("ascii"),
    }


def _sent_itemsize(dtype: str) -> int:
    return np.dtype(dtype).itemsize if dtype in _SENT_DTYPES else 4


class ExampleRoutes:
    """``examples_impl`` for the plugin: crops of at most `max_bytes` per request, read
    from probe inputs of at most `max_inputs_bytes` each."""

    def __init__(self, source: Source, max_bytes: int, max_inputs_bytes: int):
        self.source = source
        self.max_bytes = max_bytes
        self.max_inputs_bytes = max_inputs_bytes
        self._inputs: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._inputs_bytes = 0
        self._lock = threading.Lock()

    def examples_impl(
        self,
        ctx: Any,
        experiment: str,
        run: str,
        tag: str,
        step: int | None,
        rows: list[int] | None = None,
        whole: bool = False,
    ) -> dict:
        """The examples of activation `tag` at `step` (latest if None), rows `rows` (all if
        None) of the stored channels, with their crops; `whole` adds each one's input."""
        ex_tag = _examples.examples_tag(tag)
        datum = self._examples_step(ctx, experiment, run, tag, step)
        where = f"run {_name(run)}, tag {_name(ex_tag)}, step {datum.step}"
        header = header_of(self.source, ctx, datum, run, ex_tag)
        if header.get("kind") != "examples":
            raise HttpError(422, f"{where} holds {header.get('kind')!r} records, not examples")
        try:
            payload = self.source.payload(ctx, datum, header, run, ex_tag)
            found = _examples.decode(header, bytes(payload), tag=tag, step=datum.step)
        except encoding.RecordError as e:
            raise HttpError(422, f"{where} is unreadable: {e}") from None
        n_rows, k = found.indices.shape
        if rows is None:
            rows = list(range(n_rows))
        bad = [r for r in rows if r >= n_rows]
        if bad:
            raise HttpError(
                400,
                f"rows={bad[0]} is out of range; this step stores {n_rows} rows (0..{n_rows - 1})",
            )
        if whole and len(rows) > MAX_WHOLE_ROWS:
            raise HttpError(
                400, f"whole=1 with {len(rows)} rows; ask for at most {MAX_WHOLE_ROWS} rows"
            )
        pick = np.asarray(rows, dtype=np.int64)
        answer: dict[str, Any] = {
            "step": datum.step,
            "k": int(k),
            "ranked": found.ranked,
            "rows": rows,
            "channels": [int(c) for c in found.channels[pick]],
            "indices": found.indices[pick].tolist(),
            "values": [[_json_float(v) for v in row] for row in found.values[pick].tolist()],
            "positions": found.positions[pick].tolist(),
            "field": None if found.field is None else found.field.to_json(),
            "input": None,
            "crops": None,
            "maps": None,
            "inputs": None,
        }
        ref = header.get("inputs")
        if not ref:
            return answer
        inputs, in_header = self._probe_inputs(ctx, experiment, run, ref)
        layout = in_header["layout"]
        answer["input"] = {
            "layout": layout,
            "shape": list(inputs.shape),
            "range": in_header.get("range"),
            "dtype": in_header["dtype"],
        }
        sent = _sent_itemsize(in_header["dtype"])
        one = math.prod(inputs.shape[1:])
        if found.field is not None:
            crop = list(inputs.shape[1:])
            axes = _examples.input_spatial_axes(layout)
            if len(axes) != len(found.field.size) or positions_rank(found) != len(axes):
                raise HttpError(
                    422, f"{where}: the receptive field does not fit inputs of layout {layout}"
                )
            for axis, size in zip(axes, found.field.size, strict=True):
                crop[axis] = size
            nbytes = len(rows) * k * math.prod(crop) * sent
        elif found.maps is not None:
            nbytes = len(rows) * k * (one * sent + math.prod(found.maps.shape[2:]) * 4)
        else:
            nbytes = 0
        if whole and found.field is not None:
            nbytes += len(rows) * k * one * sent
        if nbytes > self.max_bytes:
            per_row = max(nbytes // max(len(rows), 1), 1)
            raise HttpError(
                413,
                f"the crops of {len(rows)} rows of {where} are {nbytes} bytes, over the limit "
                f"of {self.max_bytes} (TensorBoard flag --convfilters_max_examples_mb); ask for "
                f"fewer rows with rows=R1,R2,... (at most {max(self.max_bytes // per_row, 0)})",
                nbytes=nbytes,
                limit_bytes=self.max_bytes,
            )
        indices, positions = found.indices[pick], found.positions[pick]
        if indices.size and not (0 <= indices.min() and indices.max() < len(inputs)):
            raise HttpError(422, f"{where}: an example's index is past the {len(inputs)} inputs")
        if found.field is None and found.maps is None:
            raise HttpError(422, f"{where}: the receptive field is unknown and no maps are stored")
        if found.field is None:
            answer["crops"] = binary(inputs[indices])
            answer["maps"] = binary(found.maps[pick])
        else:
            answer["crops"] = binary(
                _examples.crops(inputs, layout, found.field, indices, positions)
            )
            if whole:
                answer["inputs"] = binary(inputs[indices])
        return answer

    def _examples_step(
        self, ctx: Any, experiment: str, run: str, tag: str, step: int | None
    ) -> Any:
        """The examples record of `tag` at `step` (latest if None); 404 saying why not."""
        try:
            series = self.source.series(ctx, experiment, run, _examples.examples_tag(tag))
        except HttpError as e:
            if e.status != 404:
                raise
            self.source.series(ctx, experiment, run, tag)  # 404 for an unknown run or tag
            series = []
        if not series:
            raise HttpError(404, f"tag {_name(tag)} in run {_name(run)} has no dataset examples")
        if step is None:
            return series[-1]
        for datum in series:
            if datum.step == step:
                return datum
        steps = [d.step for d in series]
        listed = ", ".join(map(str, steps[:12])) + (", ..." if len(steps) > 12 else "")
        raise HttpError(
            404,
            f"step {step} of run {_name(run)}, tag {_name(tag)} has no dataset examples; "
            f"steps with examples: {listed}",
        )

    def _probe_inputs(
        self, ctx: Any, experiment: str, run: str, ref: dict
    ) -> tuple[np.ndarray, dict]:
        """The probe inputs `ref` names (decoded, CRC-checked once, then from the cache)."""
        tag = ref.get("tag") if isinstance(ref, dict) else None
        if not isinstance(tag, str):
            raise HttpError(422, f"run {_name(run)}: the examples name no probe inputs tag")
        try:
            datum = step_at(self.source, ctx, experiment, run, tag, None)
        except HttpError as e:
            raise HttpError(
                404, f"the probe inputs of these examples are missing: {e.message}"
            ) from None
        header = header_of(self.source, ctx, datum, run, tag)
        where = f"run {_name(run)}, tag {_name(tag)}, step {datum.step}"
        if header.get("kind") != "inputs":
            raise HttpError(422, f"{where} holds {header.get('kind')!r} records, not inputs")
        key = (experiment, run, tag, datum.step, datum.wall_time)
        with self._lock:
            cached = self._inputs.get(key)
            if cached is not None:
                self._inputs.move_to_end(key)
                return cached, header
        size = encoding.payload_nbytes(header)
        if size > self.max_inputs_bytes:
            raise HttpError(
                413,
                f"the probe inputs {where} are {size} bytes, over the limit of "
                f"{self.max_inputs_bytes} (TensorBoard flag --convfilters_max_tensor_mb)",
                nbytes=size,
                limit_bytes=self.max_inputs_bytes,
            )
        try:
            payload = self.source.payload(ctx, datum, header, run, tag)
            inputs = encoding.decode_array(header, bytes(payload))
        except encoding.RecordError as e:
            raise HttpError(422, f"{where} is unreadable: {e}") from None
        if inputs.ndim != len(header.get("layout", "")):
            raise HttpError(422, f"{where}: inputs of shape {inputs.shape} do not fit the layout")
        with self._lock:
            if inputs.nbytes <= INPUTS_CACHE_BYTES:
                self._inputs[key] = inputs
                self._inputs_bytes += inputs.nbytes
                while self._inputs_bytes > INPUTS_CACHE_BYTES:
                    _, old = self._inputs.popitem(last=False)
                    self._inputs_bytes -= old.nbytes
        return inputs, header


def positions_rank(found: _examples.Examples) -> int:
    return found.positions.shape[-1] if found.positions.ndim == 3 else -1


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
