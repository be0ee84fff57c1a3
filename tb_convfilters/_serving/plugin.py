"""The ``convfilters`` TensorBoard plugin: routes over the plugin's index or TensorBoard.

Route handlers are thin: they parse the query (``requests``), call a ``*_impl``
method (which talks to a data source, see ``data_sources``, and is tested directly;
``align`` and ``similarity`` are in ``compare_routes``) and answer JSON, ``HttpError``
as ``{"error": ...}``. The contract is ``frontend/http_api.md``. TensorBoard makes the
plugin through ``loader``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from tensorboard import plugin_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tb_convfilters._dashboard.files import frontend_dir as _frontend_dir
from tb_convfilters._record import encoding, metadata
from tb_convfilters._record.examples import EXAMPLES_SUFFIX, INPUTS_PREFIX
from tb_convfilters._serving import data_sources
from tb_convfilters._serving.compare_routes import DEFAULT_MAX_SIMILARITY_MB, CompareRoutes
from tb_convfilters._serving.data_sources import HttpError, header_of, step_at
from tb_convfilters._serving.data_sources import quoted as _name
from tb_convfilters._serving.dynamics_routes import DEFAULT_MAX_DYNAMICS_MB, DynamicsRoutes
from tb_convfilters._serving.example_routes import DEFAULT_MAX_EXAMPLES_MB, ExampleRoutes
from tb_convfilters._serving.requests import (
    bounded_count_param,
    bytes_chunks,
    count_param,
    flag_param,
    json_response,
    param,
    route,
    rows_param,
    step_param,
    steps_param,
)
from tb_convfilters._serving.requests import (
    spread as _spread,
)
from tb_convfilters._serving.spectra_routes import (
    DEFAULT_SPECTRA_STEPS,
    MAX_SPECTRA_STEPS,
    SpectraRoutes,
)
from tb_convfilters._serving.static_files import StaticFiles

logger = logging.getLogger(__name__)

DEFAULT_MAX_TENSOR_MB = 256
# Steps the stats route returns by default, and at most (its max_steps parameter).
DEFAULT_STATS_STEPS = 500
MAX_STATS_STEPS = 10_000


@functools.lru_cache(maxsize=4096)
def _series_info(content: bytes, description: str) -> dict | None:
    """A series' entry in ``tags`` from its metadata (parsed once per distinct metadata)."""
    try:  # one hostile series must not hide the others
        info = metadata.parse_plugin_metadata(content)
        if info is not None:
            info.pop("version")
            info["description"] = description
            json.dumps(info, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        info = None
    return info


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _finite_or_none(matrix: np.ndarray) -> list:
    return [[float(v) if math.isfinite(v) else None for v in row] for row in matrix.tolist()]


class ConvFiltersPlugin(base_plugin.TBPlugin):
    """Serves logged kernels and activations to the Filters dashboard."""

    plugin_name = metadata.PLUGIN_NAME

    def __init__(
        self,
        context: base_plugin.TBContext,
        max_tensor_mb: float = DEFAULT_MAX_TENSOR_MB,
        max_similarity_mb: float = DEFAULT_MAX_SIMILARITY_MB,
        max_examples_mb: float = DEFAULT_MAX_EXAMPLES_MB,
        max_dynamics_mb: float = DEFAULT_MAX_DYNAMICS_MB,
    ):
        self._source = data_sources.make_source(context)
        logger.info("convfilters: serving from the %s", self._source.mode)
        self._max_tensor_bytes = int(max_tensor_mb * (1 << 20))
        self._compare = CompareRoutes(
            self._source, self._max_tensor_bytes, int(max_similarity_mb * (1 << 20))
        )
        self._examples = ExampleRoutes(
            self._source, int(max_examples_mb * (1 << 20)), self._max_tensor_bytes
        )
        self._spectra = SpectraRoutes(self._source, self._max_tensor_bytes)
        self._dynamics = DynamicsRoutes(
            self._source, self._max_tensor_bytes, int(max_dynamics_mb * (1 << 20))
        )
        self._source.dynamics_of = self._dynamics.doctor_dynamics  # the doctor's cache too
        self._static = StaticFiles(_frontend_dir() / "static")
        self._skipped: set[tuple[str, str]] = set()  # series already logged as unreadable

    def get_plugin_apps(self) -> dict[str, Callable]:
        return {
            "/tags": self._serve_tags,
            "/steps": self._serve_steps,
            "/tensor": self._serve_tensor,
            "/stats": self._serve_stats,
            "/static/*": self._serve_static,
            "/findings": self._serve_findings,
            "/align": self._serve_align,
            "/similarity": self._serve_similarity,
            "/examples": self._serve_examples,
            "/spectra": self._serve_spectra,
            "/spectra_steps": self._serve_spectra_steps,
            "/dynamics": self._serve_dynamics,
            "/rotation": self._serve_rotation,
        }

    def is_active(self) -> bool:
        return False  # TensorBoard activates the tab from data_plugin_names()

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path=self._static.entry(), tab_name="Filters")

    # ---- implementations (called by the routes; tested directly) ----

    def tags_impl(self, ctx: Any, experiment: str) -> dict:
        """``{run: {tag: {kind, layout, shape, dtype, description, ...}}}``; an activation
        with dataset examples has ``examples`` (their tag), which are not listed as rows."""
        result: dict[str, dict] = {}
        for run, tags in self._source.listing(ctx, experiment).items():
            for tag, series in tags.items():
                if tag.startswith(INPUTS_PREFIX) or (
                    tag.endswith(EXAMPLES_SUFFIX) and tag[: -len(EXAMPLES_SUFFIX)] in tags
                ):
                    continue
                info = _series_info(series.content, series.description or "")
                if info is None:
                    if (run, tag) not in self._skipped:
                        self._skipped.add((run, tag))
                        logger.warning("convfilters: skipping %s/%s: unreadable metadata", run, tag)
                    continue
                entry = {**info, "max_step": series.max_step}
                if info.get("kind") == "activation" and tag + EXAMPLES_SUFFIX in tags:
                    entry["examples"] = tag + EXAMPLES_SUFFIX
                result.setdefault(run, {})[tag] = entry
        return result

    def steps_impl(self, ctx: Any, experiment: str, run: str, tag: str) -> list[dict]:
        """Every step of a series, ascending."""
        return [
            {"step": d.step, "wall_time": _finite(d.wall_time)}
            for d in self._source.series(ctx, experiment, run, tag)
        ]

    def tensor_impl(
        self,
        ctx: Any,
        experiment: str,
        run: str,
        tag: str,
        step: int | None,
        max_filters: int | None = None,
        max_channels: int | None = None,
    ) -> tuple[tuple[bytes, ...], dict, int]:
        """(.npy file as (header, data...), record header, step) of one tensor; latest if None.

        `max_filters` / `max_channels` serve only the first N filters / M input
        channels (a smaller view of a tensor over the size limit); the header then
        lists the kept indices in ``filters`` / ``channels``.
        """
        datum = step_at(self._source, ctx, experiment, run, tag, step)
        header = header_of(self._source, ctx, datum, run, tag)
        where = f"run {_name(run)}, tag {_name(tag)}, step {datum.step}"
        try:
            view = encoding.view_header(header, max_filters, max_channels)
        except encoding.RecordError as e:
            raise HttpError(422, f"{where} is unreadable: {e}") from None
        except ValueError as e:
            raise HttpError(400, f"{e} ({where})") from None
        size = encoding.payload_nbytes(view)
        if size > self._max_tensor_bytes:
            raise HttpError(
                413,
                f"tensor of {where} is {size} bytes, over the limit of {self._max_tensor_bytes} "
                "(TensorBoard flag --convfilters_max_tensor_mb); ask for a smaller view with "
                "max_filters=N and/or max_channels=M",
                nbytes=size,
                limit_bytes=self._max_tensor_bytes,
            )
        try:
            payload = self._source.payload(ctx, datum, header, run, tag, chunks=True, view=view)
            return encoding.view_npy_parts(header, view, payload), view, datum.step
        except encoding.RecordError as e:
            raise HttpError(422, f"{where} is unreadable: {e}") from None

    def stats_impl(
        self,
        ctx: Any,
        experiment: str,
        run: str,
        tag: str,
        max_steps: int = DEFAULT_STATS_STEPS,
        step: int | None = None,
    ) -> dict:
        """Per-filter statistics: ``{names, steps: [{step, wall_time, values}], total_steps,
        capped}``; at most `max_steps` steps, spread evenly, the last one and `step` included."""
        if not 1 <= max_steps <= MAX_STATS_STEPS:
            raise HttpError(
                400, f"max_steps={max_steps} is out of range; expected 1..{MAX_STATS_STEPS}"
            )
        series = self._source.series(ctx, experiment, run, tag)
        at = None
        if step is not None:
            at = next((i for i, d in enumerate(series) if d.step == step), None)
            if at is None:
                raise HttpError(404, f"step {step} not found in run {_name(run)}, tag {_name(tag)}")
        picked = _spread(len(series), max_steps, at)
        names: list[str] = list(encoding.STAT_NAMES)
        steps = []
        for datum in (series[i] for i in picked):
            try:
                header = header_of(self._source, ctx, datum, run, tag)
                stats = self._source.read(ctx, datum, encoding.STATS, run, tag)
                matrix = encoding.decode_stats(header, stats)
            except (HttpError, encoding.RecordError) as e:
                error = e.message if isinstance(e, HttpError) else f"step {datum.step}: {e}"
                steps.append(
                    {"step": datum.step, "wall_time": _finite(datum.wall_time), "error": error}
                )
                continue
            names = header.get("stats") or names
            steps.append(
                {
                    "step": datum.step,
                    "wall_time": _finite(datum.wall_time),
                    "values": _finite_or_none(matrix),
                }
            )
        capped = len(picked) < len(series)
        return {"names": names, "steps": steps, "total_steps": len(series), "capped": capped}

    # ---- routes ----

    def _request_args(self, request: wrappers.Request) -> tuple[Any, str, str, str]:
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        return ctx, experiment, param(request, "run"), param(request, "tag")

    @route
    def _serve_tags(self, request: wrappers.Request) -> wrappers.Response:
        ctx = plugin_util.context(request.environ)
        response = json_response(
            request, self.tags_impl(ctx, plugin_util.experiment_id(request.environ))
        )
        indexing = getattr(self._source, "indexing", None)
        if indexing is not None and indexing():  # runs still being indexed are not listed yet
            response.headers["X-Convfilters-Indexing"] = "1"
        return response

    @route
    def _serve_steps(self, request: wrappers.Request) -> wrappers.Response:
        return json_response(request, self.steps_impl(*self._request_args(request)))

    @route
    def _serve_tensor(self, request: wrappers.Request) -> wrappers.Response:
        step = step_param(request)
        caps = count_param(request, "max_filters"), count_param(request, "max_channels")
        parts, header, real_step = self.tensor_impl(*self._request_args(request), step, *caps)
        headers = {
            "X-Convfilters-Step": str(real_step),
            "X-Convfilters-Header": json.dumps(header, separators=(",", ":")),
            # What http_util.Respond sets; it wants one bytes body, and joining the
            # .npy header to a payload of many MB would copy the payload.
            "Content-Length": str(sum(memoryview(part).nbytes for part in parts)),
            "X-Content-Type-Options": "nosniff",
            "Expires": "0",
            "Cache-Control": "no-cache, must-revalidate",
        }
        body = bytes_chunks(parts)
        return wrappers.Response(body, content_type="application/octet-stream", headers=headers)

    @route
    def _serve_stats(self, request: wrappers.Request) -> wrappers.Response:
        args = self._request_args(request)
        cap = bounded_count_param(request, "max_steps", DEFAULT_STATS_STEPS, MAX_STATS_STEPS)
        return json_response(request, self.stats_impl(*args, cap, step_param(request)))

    @route
    def _serve_static(self, request: wrappers.Request) -> wrappers.Response:
        return self._static.respond(request)

    # ---- filter doctor: the findings route (see doctor.py) ----

    def findings_impl(self, ctx: Any, experiment: str, run: str | None) -> dict:
        """``{run, thresholds, series, findings}`` for one run, or every run if `run` is None."""
        return self._source.findings(ctx, experiment, run)

    @route
    def _serve_findings(self, request: wrappers.Request) -> wrappers.Response:
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        return json_response(
            request, self.findings_impl(ctx, experiment, param(request, "run", False))
        )

    # ---- end of filter doctor ----

    # ---- dataset examples (see example_routes.py) ----

    @route
    def _serve_examples(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment, run, tag = self._request_args(request)
        step, rows = step_param(request), rows_param(request)
        whole = flag_param(request, "whole")
        return json_response(
            request, self._examples.examples_impl(ctx, experiment, run, tag, step, rows, whole)
        )

    # ---- spectra of filters (see spectra_routes.py) ----

    @route
    def _serve_spectra(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment, run, tag = self._request_args(request)
        answer = self._spectra.spectra_impl(ctx, experiment, run, tag, step_param(request))
        return json_response(request, answer)

    @route
    def _serve_spectra_steps(self, request: wrappers.Request) -> wrappers.Response:
        args = self._request_args(request)
        cap = bounded_count_param(request, "max_steps", DEFAULT_SPECTRA_STEPS, MAX_SPECTRA_STEPS)
        return json_response(request, self._spectra.spectra_steps_impl(*args, cap))

    # ---- comparing runs: align and similarity (see compare_routes.py) ----

    @route
    def _serve_align(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment, run, tag = self._request_args(request)
        base, step = param(request, "base"), step_param(request)
        return json_response(
            request, self._compare.align_impl(ctx, experiment, run, base, tag, step)
        )

    @route
    def _serve_similarity(self, request: wrappers.Request) -> wrappers.Response:
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        runs = [r for r in param(request, "runs").split(",") if r]
        if not runs:
            raise HttpError(400, "runs= is empty; expected runs=A,B,...")
        steps = steps_param(request)
        answer = self._compare.similarity_impl(ctx, experiment, param(request, "tag"), runs, steps)
        return json_response(request, answer)

    # ---- training dynamics (see dynamics_routes.py) ----

    @route
    def _serve_dynamics(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment, run, tag = self._request_args(request)
        return json_response(request, self._dynamics.dynamics_impl(ctx, experiment, run, tag))

    @route
    def _serve_rotation(self, request: wrappers.Request) -> wrappers.Response:
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        answer = self._dynamics.rotation_impl(ctx, experiment, param(request, "run"))
        return json_response(request, answer)
