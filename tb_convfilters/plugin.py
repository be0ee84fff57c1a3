"""The ``convfilters`` TensorBoard plugin: routes over TensorBoard's data provider.

Route handlers are thin: they parse the query, call a ``*_impl`` method (which
talks to the data provider and is tested directly) and turn ``HttpError`` into
a JSON ``{"error": ...}`` response. The contract is ``frontend/http_api.md``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import mimetypes
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from werkzeug import wrappers
from werkzeug.security import safe_join

from tb_convfilters import blob, metadata

logger = logging.getLogger(__name__)

# Effectively "every step that TensorBoard kept" for read_blob_sequences.
_ALL_STEPS = 1_000_000_000
_MAX_STEP = 2**63 - 1
DEFAULT_MAX_TENSOR_MB = 256
_STEP_RE = re.compile(r"[0-9]{1,19}")


class HttpError(Exception):
    """An error answered as JSON ``{"error": message}`` with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _frontend_dir() -> Path:
    try:
        return Path(str(resources.files("tb_convfilters.frontend")))
    except ModuleNotFoundError:  # running from a source checkout without install
        return Path(__file__).resolve().parent.parent / "frontend"


def _json(request: wrappers.Request, content: Any, code: int = 200) -> wrappers.Response:
    body = json.dumps(content, allow_nan=False, separators=(",", ":"))
    return http_util.Respond(request, body, "application/json", code=code)


def _route(handler: Callable[..., wrappers.Response]) -> Callable:
    """Wraps a handler: HttpError and TensorBoard's public errors become JSON."""

    @wrappers.Request.application
    @functools.wraps(handler)
    def app(self: ConvFiltersPlugin, request: wrappers.Request) -> wrappers.Response:
        try:
            return handler(self, request)
        except HttpError as e:
            return _json(request, {"error": e.message}, e.status)
        except errors.NotFoundError as e:
            return _json(request, {"error": str(e)}, 404)
        except errors.PublicError as e:
            return _json(request, {"error": str(e)}, 400)
        except Exception:  # never answer with a traceback or a bare 500 page
            logger.exception("convfilters: %s failed", request.path)
            return _json(request, {"error": "internal error; see the TensorBoard log"}, 500)

    return app


def _param(request: wrappers.Request, name: str, required: bool = True) -> str | None:
    values = request.args.getlist(name)
    if len(values) > 1:
        raise HttpError(400, f"parameter {name!r} was given {len(values)} times; give it once")
    if not values:
        if required:
            raise HttpError(400, f"missing parameter {name!r}")
        return None
    return values[0]


def _step_param(request: wrappers.Request) -> int | None:
    raw = _param(request, "step", required=False)
    if raw is None:
        return None
    if not _STEP_RE.fullmatch(raw) or int(raw) > _MAX_STEP:
        raise HttpError(400, f"step={raw[:40]!r} is not a step; expected an integer 0..{_MAX_STEP}")
    return int(raw)


def _finite_or_none(matrix: np.ndarray) -> list:
    return [[float(v) if math.isfinite(v) else None for v in row] for row in matrix.tolist()]


class ConvFiltersPlugin(base_plugin.TBPlugin):
    """Serves logged kernels and activations to the Filters dashboard."""

    plugin_name = metadata.PLUGIN_NAME

    def __init__(
        self, context: base_plugin.TBContext, max_tensor_mb: float = DEFAULT_MAX_TENSOR_MB
    ):
        self._provider = context.data_provider
        self._max_tensor_bytes = int(max_tensor_mb * (1 << 20))
        self._static = _frontend_dir() / "static"

    def get_plugin_apps(self) -> dict[str, Callable]:
        return {
            "/tags": self._serve_tags,
            "/steps": self._serve_steps,
            "/tensor": self._serve_tensor,
            "/stats": self._serve_stats,
            "/static/*": self._serve_static,
        }

    def is_active(self) -> bool:
        return False  # TensorBoard activates the tab from data_plugin_names()

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name="Filters")

    # ---- implementations (called by the routes; tested directly) ----

    def tags_impl(self, ctx: Any, experiment: str) -> dict:
        """``{run: {tag: {kind, layout, shape, dtype, description, ...}}}``."""
        listing = self._provider.list_blob_sequences(
            ctx, experiment_id=experiment, plugin_name=metadata.PLUGIN_NAME
        )
        result: dict[str, dict] = {}
        for run, tags in listing.items():
            for tag, series in tags.items():
                info = metadata.parse_plugin_metadata(series.plugin_content)
                if info is None:
                    logger.warning("convfilters: skipping %s/%s: unreadable metadata", run, tag)
                    continue
                info.pop("version")
                info["description"] = series.description or ""
                info["max_step"] = series.max_step
                result.setdefault(run, {})[tag] = info
        return result

    def _series(self, ctx: Any, experiment: str, run: str, tag: str) -> list:
        data = self._provider.read_blob_sequences(
            ctx,
            experiment_id=experiment,
            plugin_name=metadata.PLUGIN_NAME,
            downsample=_ALL_STEPS,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
        )
        if tag in data.get(run, {}):
            return data[run][tag]
        # The provider drops runs with no matching tag: say which one is unknown.
        known = self._provider.list_blob_sequences(
            ctx,
            experiment_id=experiment,
            plugin_name=metadata.PLUGIN_NAME,
            run_tag_filter=provider.RunTagFilter(runs=[run]),
        )
        if run not in known:
            raise HttpError(404, f"run {run!r} not found")
        raise HttpError(404, f"tag {tag!r} not found in run {run!r}")

    def steps_impl(self, ctx: Any, experiment: str, run: str, tag: str) -> list[dict]:
        """Every kept step of a series, ascending."""
        series = self._series(ctx, experiment, run, tag)
        return [
            {"step": d.step, "wall_time": d.wall_time} for d in sorted(series, key=lambda d: d.step)
        ]

    def _datum(self, ctx: Any, experiment: str, run: str, tag: str, step: int | None) -> Any:
        series = self._series(ctx, experiment, run, tag)
        if not series:
            raise HttpError(404, f"no steps in run {run!r}, tag {tag!r}")
        if step is None:
            return max(series, key=lambda d: d.step)
        for datum in series:
            if datum.step == step:
                return datum
        steps = sorted(d.step for d in series)
        raise HttpError(
            404,
            f"step {step} not found in run {run!r}, tag {tag!r}; "
            f"it has {len(steps)} steps from {steps[0]} to {steps[-1]}",
        )

    def _blob(self, ctx: Any, datum: Any, index: int, run: str, tag: str) -> bytes:
        if len(datum.values) <= index:
            raise HttpError(
                422, f"step {datum.step} of run {run!r}, tag {tag!r} is not a convfilters record"
            )
        return self._provider.read_blob(ctx, blob_key=datum.values[index].blob_key)

    def _header(self, ctx: Any, datum: Any, run: str, tag: str) -> dict:
        try:
            return blob.decode_header(self._blob(ctx, datum, blob.HEADER, run, tag))
        except blob.RecordError as e:
            raise HttpError(
                422, f"step {datum.step} of run {run!r}, tag {tag!r} is unreadable: {e}"
            ) from None

    def tensor_impl(
        self, ctx: Any, experiment: str, run: str, tag: str, step: int | None
    ) -> tuple[bytes, dict, int]:
        """(.npy bytes, step header, step) of one logged tensor; latest step if None."""
        datum = self._datum(ctx, experiment, run, tag, step)
        header = self._header(ctx, datum, run, tag)
        size = blob.payload_nbytes(header)
        if size > self._max_tensor_bytes:
            raise HttpError(
                413,
                f"tensor of run {run!r}, tag {tag!r}, step {datum.step} is {size} bytes, over the "
                f"limit of {self._max_tensor_bytes} (TensorBoard flag --convfilters_max_tensor_mb)",
            )
        payload = self._blob(ctx, datum, blob.PAYLOAD, run, tag)
        try:
            return blob.npy_bytes(header, payload), header, datum.step
        except blob.RecordError as e:
            raise HttpError(
                422, f"step {datum.step} of run {run!r}, tag {tag!r} is unreadable: {e}"
            ) from None

    def stats_impl(self, ctx: Any, experiment: str, run: str, tag: str) -> dict:
        """Per-filter statistics for every step: ``{names, steps: [{step, wall_time, values}]}``."""
        series = sorted(self._series(ctx, experiment, run, tag), key=lambda d: d.step)
        names: list[str] = list(blob.STAT_NAMES)
        steps = []
        for datum in series:
            try:
                header = self._header(ctx, datum, run, tag)
                matrix = blob.decode_stats(header, self._blob(ctx, datum, blob.STATS, run, tag))
            except (HttpError, blob.RecordError) as e:
                steps.append({"step": datum.step, "wall_time": datum.wall_time, "error": str(e)})
                continue
            names = header.get("stats") or names
            steps.append(
                {
                    "step": datum.step,
                    "wall_time": datum.wall_time,
                    "values": _finite_or_none(matrix),
                }
            )
        return {"names": names, "steps": steps}

    # ---- routes ----

    def _request_args(self, request: wrappers.Request) -> tuple[Any, str, str, str]:
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        return ctx, experiment, _param(request, "run"), _param(request, "tag")

    @_route
    def _serve_tags(self, request: wrappers.Request) -> wrappers.Response:
        ctx = plugin_util.context(request.environ)
        return _json(request, self.tags_impl(ctx, plugin_util.experiment_id(request.environ)))

    @_route
    def _serve_steps(self, request: wrappers.Request) -> wrappers.Response:
        return _json(request, self.steps_impl(*self._request_args(request)))

    @_route
    def _serve_tensor(self, request: wrappers.Request) -> wrappers.Response:
        step = _step_param(request)
        body, header, real_step = self.tensor_impl(*self._request_args(request), step)
        headers = [
            ("X-Convfilters-Step", str(real_step)),
            ("X-Convfilters-Header", json.dumps(header, separators=(",", ":"))),
        ]
        return http_util.Respond(request, body, "application/octet-stream", headers=headers)

    @_route
    def _serve_stats(self, request: wrappers.Request) -> wrappers.Response:
        return _json(request, self.stats_impl(*self._request_args(request)))

    @_route
    def _serve_static(self, request: wrappers.Request) -> wrappers.Response:
        name = request.path.split("/static/", 1)[-1]
        path = safe_join(str(self._static), name)
        if path is None or not Path(path).is_file():
            raise HttpError(404, f"no static file {name[:100]!r}")
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if path.endswith(".js"):
            content_type = "text/javascript"
        return http_util.Respond(request, Path(path).read_bytes(), content_type)


class ConvFiltersLoader(base_plugin.TBLoader):
    """Loads the plugin and makes every logged step available by default."""

    def define_flags(self, parser: Any) -> None:
        parser.add_argument(
            "--convfilters_max_tensor_mb",
            type=float,
            default=DEFAULT_MAX_TENSOR_MB,
            help="Filters tab: largest tensor (MiB) served to the browser (default: %(default)s).",
        )

    def fix_flags(self, flags: Any) -> None:
        # Keep every step (0 = all) unless the user set --samples_per_plugin=convfilters=N.
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):
            samples.setdefault(metadata.PLUGIN_NAME, 0)
        # Our Keras callback shares log_dir/train with the stock TensorBoard callback:
        # poll every event file of a run, not only the newest, unless told otherwise.
        if getattr(flags, "reload_multifile", False) is None:
            flags.reload_multifile = True

    def load(self, context: base_plugin.TBContext) -> ConvFiltersPlugin:
        flags = context.flags
        max_mb = (
            getattr(flags, "convfilters_max_tensor_mb", DEFAULT_MAX_TENSOR_MB)
            if flags
            else DEFAULT_MAX_TENSOR_MB
        )
        return ConvFiltersPlugin(context, max_tensor_mb=max_mb)
