"""The dashboard's files (``frontend/static``), served under their version.

TensorBoard loads the dashboard from ``static/<version>/index.js`` and everything else
relative to it, so a browser may keep the files for a week: a changed file changes the
version and so the address. An address with another version (a page from before an
upgrade) or none still answers, with the current file, not to be kept.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from tensorboard.backend import http_util
from werkzeug import wrappers
from werkzeug.security import safe_join

from tb_convfilters._dashboard.files import version_of
from tb_convfilters._serving.data_sources import HttpError

MAX_AGE_S = 7 * 24 * 3600
_VERSION = re.compile(r"[0-9a-f]{12}")
# Files are served with these types only; anything else is application/octet-stream.
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
_COMPRESSED = {".png", ".woff2"}  # sent as they are


class StaticFiles:
    """Answers ``static/...`` requests from `folder`, gzipped once per file version."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._gzipped: dict[Path, tuple[tuple[int, int], bytes]] = {}

    def entry(self) -> str:
        """The dashboard's module path for TensorBoard (asked on every page load)."""
        return f"/static/{version_of(self.folder)}/index.js"

    def respond(self, request: wrappers.Request) -> wrappers.Response:
        name = request.path.split("/static/", 1)[-1]
        version, _, rest = name.partition("/")
        expires = 0
        if _VERSION.fullmatch(version) and rest:
            name = rest
            expires = MAX_AGE_S if version == version_of(self.folder) else 0
        path = self._find(name)
        suffix = path.suffix.lower()
        content_type = _CONTENT_TYPES.get(suffix, "application/octet-stream")
        if suffix in _COMPRESSED:
            return http_util.Respond(request, path.read_bytes(), content_type, expires=expires)
        return http_util.Respond(
            request, self._gzip(path), content_type, expires=expires, content_encoding="gzip"
        )

    def _find(self, name: str) -> Path:
        root = self.folder.resolve()
        joined = safe_join(str(root), name)
        try:  # resolve() also catches symlinks that lead out of the folder
            path = Path(joined).resolve() if joined else None
            if path is not None and path.is_relative_to(root) and path.is_file():
                return path
        except (OSError, ValueError):
            pass
        raise HttpError(404, f"no static file {name[:100]!r}")

    def _gzip(self, path: Path) -> bytes:
        """The file gzipped (Respond unzips it for a browser that does not take gzip)."""
        info = path.stat()
        key = (info.st_size, info.st_mtime_ns)
        cached = self._gzipped.get(path)
        if cached is None or cached[0] != key:
            cached = key, gzip.compress(path.read_bytes(), mtime=0)
            self._gzipped[path] = cached
        return cached[1]
