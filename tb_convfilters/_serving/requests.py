"""The routes' side of HTTP: query parameters parsed and checked, JSON answers.

Every route is wrapped by `route`, which answers ``HttpError`` and TensorBoard's
public errors as JSON ``{"error": ...}`` (never a traceback); the parameters'
rules are those of ``frontend/http_api.md``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from tensorboard import errors
from tensorboard.backend import http_util
from werkzeug import wrappers

from tb_convfilters._record.arguments import MAX_STEP
from tb_convfilters._serving.data_sources import HttpError

logger = logging.getLogger(__name__)

_STEP_RE = re.compile(r"[0-9]{1,19}")
_COUNT_RE = re.compile(r"[0-9]{1,9}")


def json_response(request: wrappers.Request, content: Any, code: int = 200) -> wrappers.Response:
    body = json.dumps(content, allow_nan=False, separators=(",", ":"))
    return http_util.Respond(request, body, "application/json", code=code)


def _cut(message: str, limit: int = 500) -> str:
    """An error message cut short: they may quote huge names from the request."""
    return message if len(message) <= limit else message[:limit] + "..."


def route(handler: Callable[..., wrappers.Response]) -> Callable:
    """Wraps a handler: HttpError and TensorBoard's public errors become JSON."""

    @wrappers.Request.application
    @functools.wraps(handler)
    def app(self: Any, request: wrappers.Request) -> wrappers.Response:
        try:
            return handler(self, request)
        except HttpError as e:
            return json_response(request, {"error": e.message, **e.details}, e.status)
        except errors.NotFoundError as e:
            return json_response(request, {"error": _cut(str(e))}, 404)
        except errors.PublicError as e:
            return json_response(request, {"error": _cut(str(e))}, 400)
        except Exception:  # never answer with a traceback or a bare 500 page
            logger.exception("convfilters: %s failed", request.path)
            return json_response(request, {"error": "internal error; see the TensorBoard log"}, 500)

    return app


def param(request: wrappers.Request, name: str, required: bool = True) -> str | None:
    """The one value of parameter `name` (400 if given twice, or missing and `required`)."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise HttpError(400, f"parameter {name!r} was given {len(values)} times; give it once")
    if not values:
        if required:
            raise HttpError(400, f"missing parameter {name!r}")
        return None
    return values[0]


def step_param(request: wrappers.Request) -> int | None:
    """``step=S``, or None if not given."""
    raw = param(request, "step", required=False)
    if raw is None:
        return None
    if not _STEP_RE.fullmatch(raw) or int(raw) > MAX_STEP:
        raise HttpError(400, f"step={raw[:40]!r} is not a step; expected an integer 0..{MAX_STEP}")
    return int(raw)


def steps_param(request: wrappers.Request) -> list[int] | None:
    """``steps=S1,S2,...``, or None if not given."""
    raw = param(request, "steps", required=False)
    if raw is None:
        return None
    parts = raw.split(",")
    if not all(_STEP_RE.fullmatch(p) and int(p) <= MAX_STEP for p in parts):
        raise HttpError(400, f"steps={raw[:40]!r} is not a list of steps S1,S2,...")
    return [int(p) for p in parts]


def rows_param(request: wrappers.Request, most: int = 100_000) -> list[int] | None:
    """``rows=R1,R2,...`` (row indices 0.., at most `most` of them), or None if not given."""
    raw = param(request, "rows", required=False)
    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) > most or not all(_COUNT_RE.fullmatch(p) for p in parts):
        raise HttpError(
            400, f"rows={raw[:40]!r} is not a list of row indices R1,R2,... (at most {most})"
        )
    return [int(p) for p in parts]


def flag_param(request: wrappers.Request, name: str) -> bool:
    """``name=1`` or ``name=0`` (the default)."""
    raw = param(request, name, required=False)
    if raw not in (None, "0", "1"):
        raise HttpError(400, f"{name}={raw[:40]!r} is not allowed; expected 0 or 1")
    return raw == "1"


def count_param(request: wrappers.Request, name: str) -> int | None:
    """A count ``name=N`` (1 or more), or None if not given."""
    raw = param(request, name, required=False)
    if raw is None:
        return None
    if not _COUNT_RE.fullmatch(raw) or int(raw) < 1:
        raise HttpError(
            400, f"{name}={raw[:40]!r} is not a count; expected an integer 1..999999999"
        )
    return int(raw)


def bounded_count_param(request: wrappers.Request, name: str, default: int, most: int) -> int:
    """A count ``name=N`` of at most `most`; `default` if not given."""
    raw = param(request, name, required=False)
    if raw is None:
        return default
    value = int(raw) if _COUNT_RE.fullmatch(raw) else -1
    if not 1 <= value <= most:
        raise HttpError(400, f"{name}={raw[:40]!r} is not allowed; expected an integer 1..{most}")
    return value


def bytes_chunks(parts: tuple[Any, ...], size: int = 1 << 20) -> Iterator[bytes]:
    """`parts` as bytes, as WSGI servers want: bytes-like parts (arrays, views of a
    record) are copied `size` bytes at a time, never whole."""
    for part in parts:
        if isinstance(part, bytes):
            yield part
            continue
        view = memoryview(part).cast("B")
        for i in range(0, len(view), size):
            yield view[i : i + size].tobytes()


def spread(total: int, cap: int, must: int | None) -> list[int]:
    """Indices of at most `cap` of `total` steps: evenly spaced with the last one, plus
    `must` (an index) when given."""
    if total <= cap:
        return list(range(total))
    room = cap - (must is not None)
    picked = {round(x) for x in np.linspace(total - 1, 0, room)} if room > 0 else set()
    return sorted(picked if must is None else picked | {must})
