"""The ``convfilters`` TensorBoard plugin: routes over the plugin's index or TensorBoard.

Route handlers are thin: they parse the query, call a ``*_impl`` method (which
talks to a data source, see ``data_sources``, and is tested directly) and turn
``HttpError`` into a JSON ``{"error": ...}`` response. The contract is
``frontend/http_api.md``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers
from werkzeug.security import safe_join

from tb_convfilters._dashboard.files import frontend_dir as _frontend_dir
from tb_convfilters._record import encoding, metadata
from tb_convfilters._serving import data_sources, memory_release
from tb_convfilters._serving.compare_routes import DEFAULT_MAX_SIMILARITY_MB, CompareRoutes
from tb_convfilters._serving.data_sources import HttpError
from tb_convfilters._serving.data_sources import quoted as _name

logger = logging.getLogger(__name__)

_MAX_STEP = 2**63 - 1
DEFAULT_MAX_TENSOR_MB = 256
# Steps the stats route returns by default, and at most (its max_steps parameter).
DEFAULT_STATS_STEPS = 500
MAX_STATS_STEPS = 10_000
_STEP_RE = re.compile(r"[0-9]{1,19}")
_COUNT_RE = re.compile(r"[0-9]{1,9}")
# Static files are served with these types only; anything else is application/octet-stream.
_CONTENT_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".json": "application/json",
    ".md": "text/markdown",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
}


def _json(request: wrappers.Request, content: Any, code: int = 200) -> wrappers.Response:
    body = json.dumps(content, allow_nan=False, separators=(",", ":"))
    return http_util.Respond(request, body, "application/json", code=code)


def _cut(message: str, limit: int = 500) -> str:
    """An error message cut short: they may quote huge names from the request."""
    return message if len(message) <= limit else message[:limit] + "..."


def _route(handler: Callable[..., wrappers.Response]) -> Callable:
    """Wraps a handler: HttpError and TensorBoard's public errors become JSON."""

    @wrappers.Request.application
    @functools.wraps(handler)
    def app(self: ConvFiltersPlugin, request: wrappers.Request) -> wrappers.Response:
        try:
            return handler(self, request)
        except HttpError as e:
            return _json(request, {"error": e.message, **e.details}, e.status)
        except errors.NotFoundError as e:
            return _json(request, {"error": _cut(str(e))}, 404)
        except errors.PublicError as e:
            return _json(request, {"error": _cut(str(e))}, 400)
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


def _count_param(request: wrappers.Request, name: str) -> int | None:
    raw = _param(request, name, required=False)
    if raw is None:
        return None
    if not _COUNT_RE.fullmatch(raw) or int(raw) < 1:
        raise HttpError(
            400, f"{name}={raw[:40]!r} is not a count; expected an integer 1..999999999"
        )
    return int(raw)


def _bytes_chunks(parts: tuple[Any, ...], size: int = 1 << 20) -> Iterator[bytes]:
    """`parts` as bytes, as WSGI servers want: bytes-like parts (arrays, views of a
    record) are copied `size` bytes at a time, never whole."""
    for part in parts:
        if isinstance(part, bytes):
            yield part
            continue
        view = memoryview(part).cast("B")
        for i in range(0, len(view), size):
            yield view[i : i + size].tobytes()


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


def _spread(total: int, cap: int, must: int | None) -> list[int]:
    """Indices of at most `cap` of `total` steps: evenly spaced with the last one, plus
    `must` (an index) when given."""
    if total <= cap:
        return list(range(total))
    room = cap - (must is not None)
    picked = {round(x) for x in np.linspace(total - 1, 0, room)} if room > 0 else set()
    return sorted(picked if must is None else picked | {must})


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _finite_or_none(matrix: np.ndarray) -> list:
    return [[float(v) if math.isfinite(v) else None for v in row] for row in matrix.tolist()]


class ConvFiltersPlugin(CompareRoutes, base_plugin.TBPlugin):
    """Serves logged kernels and activations to the Filters dashboard."""

    plugin_name = metadata.PLUGIN_NAME

    def __init__(
        self,
        context: base_plugin.TBContext,
        max_tensor_mb: float = DEFAULT_MAX_TENSOR_MB,
        max_similarity_mb: float = DEFAULT_MAX_SIMILARITY_MB,
    ):
        self._source = data_sources.make_source(context)
        logger.info("convfilters: serving from the %s", self._source.mode)
        self._max_tensor_bytes = int(max_tensor_mb * (1 << 20))
        self._max_similarity_bytes = int(max_similarity_mb * (1 << 20))
        self._static = _frontend_dir() / "static"
        self._skipped: set[tuple[str, str]] = set()  # series already logged as unreadable
        self._align_cache: OrderedDict = OrderedDict()
        self._align_lock = threading.Lock()

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
        }

    def is_active(self) -> bool:
        return False  # TensorBoard activates the tab from data_plugin_names()

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name="Filters")

    # ---- implementations (called by the routes; tested directly) ----

    def tags_impl(self, ctx: Any, experiment: str) -> dict:
        """``{run: {tag: {kind, layout, shape, dtype, description, ...}}}``."""
        result: dict[str, dict] = {}
        for run, tags in self._source.listing(ctx, experiment).items():
            for tag, series in tags.items():
                info = _series_info(series.content, series.description or "")
                if info is None:
                    if (run, tag) not in self._skipped:
                        self._skipped.add((run, tag))
                        logger.warning("convfilters: skipping %s/%s: unreadable metadata", run, tag)
                    continue
                result.setdefault(run, {})[tag] = {**info, "max_step": series.max_step}
        return result

    def steps_impl(self, ctx: Any, experiment: str, run: str, tag: str) -> list[dict]:
        """Every step of a series, ascending."""
        return [
            {"step": d.step, "wall_time": _finite(d.wall_time)}
            for d in self._source.series(ctx, experiment, run, tag)
        ]

    def _datum(self, ctx: Any, experiment: str, run: str, tag: str, step: int | None) -> Any:
        series = self._source.series(ctx, experiment, run, tag)
        if not series:
            raise HttpError(404, f"no steps in run {_name(run)}, tag {_name(tag)}")
        if step is None:
            return series[-1]
        for datum in series:
            if datum.step == step:
                return datum
        raise HttpError(
            404,
            f"step {step} not found in run {_name(run)}, tag {_name(tag)}; "
            f"it has {len(series)} steps from {series[0].step} to {series[-1].step}",
        )

    def _header(self, ctx: Any, datum: Any, run: str, tag: str) -> dict:
        try:
            return encoding.read_header(
                lambda i: self._source.read(ctx, datum, i, run, tag), self._source.count(datum)
            )
        except encoding.RecordError as e:
            raise HttpError(
                422, f"step {datum.step} of run {_name(run)}, tag {_name(tag)} is unreadable: {e}"
            ) from None

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
        datum = self._datum(ctx, experiment, run, tag, step)
        header = self._header(ctx, datum, run, tag)
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
                header = self._header(ctx, datum, run, tag)
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
        caps = _count_param(request, "max_filters"), _count_param(request, "max_channels")
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
        body = _bytes_chunks(parts)
        return wrappers.Response(body, content_type="application/octet-stream", headers=headers)

    @_route
    def _serve_stats(self, request: wrappers.Request) -> wrappers.Response:
        args = self._request_args(request)
        raw = _param(request, "max_steps", required=False)
        cap = DEFAULT_STATS_STEPS if raw is None else -1
        if raw is not None and _COUNT_RE.fullmatch(raw):
            cap = int(raw)
        if not 1 <= cap <= MAX_STATS_STEPS:
            allowed = f"expected an integer 1..{MAX_STATS_STEPS}"
            raise HttpError(400, f"max_steps={raw[:40]!r} is not allowed; {allowed}")
        return _json(request, self.stats_impl(*args, cap, _step_param(request)))

    @_route
    def _serve_static(self, request: wrappers.Request) -> wrappers.Response:
        name = request.path.split("/static/", 1)[-1]
        root = self._static.resolve()
        joined = safe_join(str(root), name)
        try:  # resolve() also catches symlinks that lead out of static/
            path = Path(joined).resolve() if joined else None
            found = path is not None and path.is_relative_to(root) and path.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            raise HttpError(404, f"no static file {name[:100]!r}")
        content_type = _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return http_util.Respond(request, path.read_bytes(), content_type)

    # ---- filter doctor: the findings route (see doctor.py) ----

    def findings_impl(self, ctx: Any, experiment: str, run: str | None) -> dict:
        """``{run, thresholds, series, findings}`` for one run, or every run if `run` is None."""
        return self._source.findings(ctx, experiment, run)

    @_route
    def _serve_findings(self, request: wrappers.Request) -> wrappers.Response:
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        return _json(request, self.findings_impl(ctx, experiment, _param(request, "run", False)))

    # ---- end of filter doctor ----

    # ---- comparing runs: align and similarity (see compare_routes.py) ----

    @_route
    def _serve_align(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment, run, tag = self._request_args(request)
        base, step = _param(request, "base"), _step_param(request)
        return _json(request, self.align_impl(ctx, experiment, run, base, tag, step))

    @_route
    def _serve_similarity(self, request: wrappers.Request) -> wrappers.Response:
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        runs = [r for r in _param(request, "runs").split(",") if r]
        if not runs:
            raise HttpError(400, "runs= is empty; expected runs=A,B,...")
        raw, steps = _param(request, "steps", required=False), None
        if raw is not None:
            parts = raw.split(",")
            if not all(_STEP_RE.fullmatch(p) and int(p) <= _MAX_STEP for p in parts):
                raise HttpError(400, f"steps={raw[:40]!r} is not a list of steps S1,S2,...")
            steps = [int(p) for p in parts]
        return _json(
            request, self.similarity_impl(ctx, experiment, _param(request, "tag"), runs, steps)
        )


def _use_c_crc32c() -> None:
    """Makes TensorBoard's TensorFlow-free event reader check CRCs in C.

    Without TensorFlow (e.g. to read s3:// logdirs) TensorBoard computes every
    record's CRC32C in pure Python, ~7 MB/s; the C ``crc32c`` gives the same values.
    """
    import crc32c
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

    pywrap_tensorflow.crc32c = crc32c.crc32c


class ConvFiltersLoader(base_plugin.TBLoader):
    """Loads the plugin and makes every logged step available by default."""

    def define_flags(self, parser: Any) -> None:
        parser.add_argument(
            "--convfilters_max_tensor_mb",
            type=float,
            default=DEFAULT_MAX_TENSOR_MB,
            help="Filters tab: largest tensor (MiB) served to the browser (default: %(default)s).",
        )
        parser.add_argument(
            "--convfilters_max_similarity_mb",
            type=float,
            default=DEFAULT_MAX_SIMILARITY_MB,
            help="Filters tab: memory (MiB) one CKA similarity request may use "
            "(default: %(default)s).",
        )
        parser.add_argument(
            "--convfilters_release_memory",
            choices=("true", "false"),
            default="true",
            help="Filters tab: give memory back after TensorBoard's loaders read our records "
            "(glibc only; default: %(default)s).",
        )

    def fix_flags(self, flags: Any) -> None:
        _use_c_crc32c()
        # TensorBoard keeps one step per tag of ours in memory (enough to show the tab)
        # unless the user set --samples_per_plugin=convfilters=N: the plugin's own index
        # serves every step from the event files. Without a logdir to index
        # (--grpc_data_provider) the plugin serves what TensorBoard kept: keep all (0).
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):
            indexed = not getattr(flags, "grpc_data_provider", "")
            samples.setdefault(metadata.PLUGIN_NAME, 1 if indexed else 0)
        # Our Keras callback shares log_dir/train with the stock TensorBoard callback:
        # poll every event file of a run, not only the newest, unless told otherwise.
        # The index reads every file anyway; this is for the stock callback's scalars
        # (and our one kept step per tag, which activates the tab). Not on object
        # stores, where our Writer uploads one new file per flush.
        logdir = getattr(flags, "logdir", "") or ""
        if getattr(flags, "reload_multifile", False) is None and "://" not in logdir:
            flags.reload_multifile = True
        # The Rust data server, spawned after this and before `load`, reads glibc's
        # tunables from its environment at start; `load` takes the variable back.
        if (
            getattr(flags, "convfilters_release_memory", "true") == "true"
            and getattr(flags, "load_fast", "auto") != "false"
            and not getattr(flags, "grpc_data_provider", "")
        ):
            self._env_set = memory_release.set_data_server_env()

    def load(self, context: base_plugin.TBContext) -> ConvFiltersPlugin:
        if getattr(self, "_env_set", False):
            memory_release.unset_data_server_env()
            self._env_set = False
        flags = context.flags
        max_mb = (
            getattr(flags, "convfilters_max_tensor_mb", DEFAULT_MAX_TENSOR_MB)
            if flags
            else DEFAULT_MAX_TENSOR_MB
        )
        # The Python loader reads in TensorBoard's own process (see memory_release.Releaser).
        if (
            flags is not None
            and context.multiplexer is not None
            and getattr(flags, "convfilters_release_memory", "true") == "true"
        ):
            interval = float(getattr(flags, "reload_interval", 5.0) or 5.0)
            memory_release.Releaser(context.multiplexer, max(interval, 1.0)).start()
        similarity_mb = (
            getattr(flags, "convfilters_max_similarity_mb", DEFAULT_MAX_SIMILARITY_MB)
            if flags
            else DEFAULT_MAX_SIMILARITY_MB
        )
        return ConvFiltersPlugin(context, max_tensor_mb=max_mb, max_similarity_mb=similarity_mb)
