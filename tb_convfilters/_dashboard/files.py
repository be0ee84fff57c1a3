"""Where the packaged dashboard's files are, however the package was installed."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path


def frontend_dir() -> Path:
    """The real folder of the dashboard's files, however the package was installed.

    A wheel or sdist puts it at ``tb_convfilters/frontend``; an editable install maps
    the package to the checkout's ``frontend/``. Its import spec lists the folders
    (``str()`` of ``importlib.resources.files`` is no path for a namespace package).
    """
    try:
        spec = importlib.util.find_spec("tb_convfilters.frontend")
    except ModuleNotFoundError:
        spec = None
    candidates = [Path(p) for p in (spec.submodule_search_locations or ())] if spec else []
    candidates.append(Path(__file__).resolve().parents[2] / "frontend")  # a bare checkout
    for folder in candidates:
        if (folder / "static" / "index.js").is_file():
            return folder
    raise RuntimeError(
        "tb_convfilters: the dashboard's files (frontend/static/index.js) are missing from "
        f"{', '.join(map(str, candidates))}; reinstall with `pip install tb-convfilters`"
    )


_versions: dict[Path, tuple[list, str]] = {}


def version_of(static: Path) -> str:
    """12 hex digits that change whenever a file of `static` does: a digest of its files.

    The dashboard is served under ``static/<version>/`` so that browsers may keep its files:
    a changed file (an upgrade, an edit in an editable install) gets a new address. The
    digest is of the contents, read again only when a file's name, size or mtime changed.
    """
    stamp = []
    for path in sorted(static.iterdir()):
        try:
            info = path.stat()
        except OSError:  # removed meanwhile
            continue
        stamp.append((path.name, info.st_size, info.st_mtime_ns))
    known = _versions.get(static)
    if known is None or known[0] != stamp:
        digest = hashlib.sha1()
        for name, *_ in stamp:
            try:
                digest.update(name.encode() + b"\0" + (static / name).read_bytes() + b"\0")
            except OSError:
                continue
        known = stamp, digest.hexdigest()[:12]
        _versions[static] = known
    return known[1]
