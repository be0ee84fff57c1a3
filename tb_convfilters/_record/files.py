"""Log paths: local directories, and URLs through the filesystem layer TensorBoard reads with.

Local paths use the operating system directly (the fast path). A URL (``s3://``,
``gs://``, ...) goes through the gfile TensorBoard itself would use: TensorFlow's
``tf.io.gfile`` when TensorFlow is installed and has the scheme (``gs://``, or
``s3://`` with ``tensorflow-io``), otherwise TensorBoard's TensorFlow-free gfile
(``s3://`` through ``boto3`` and the ``S3_ENDPOINT`` variable; any other scheme
``fsspec`` knows, e.g. ``gs://`` with ``gcsfs``). Object stores cannot append:
files are written whole, once (see ``Writer``).
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import sys
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_s3_endpoint: Any = object()  # S3_ENDPOINT when TensorBoard's S3 filesystem was last set up
# Schemes whose directories TensorBoard lists by globbing (io_util.IsCloudPath).
_GLOBBED = ("gs://", "s3://")


def is_url(path: str) -> bool:
    """True for ``scheme://...`` paths, which go through a gfile."""
    return "://" in path


def join(path: str, *names: str) -> str:
    if is_url(path):
        return posixpath.join(path, *names)
    return os.path.join(path, *names)


@functools.cache
def _tensorflow_gfile(scheme: str) -> Any:
    """TensorFlow's gfile if TensorBoard would read `scheme` with it, else None."""
    from tensorboard.compat import tf

    if getattr(tf, "__version__", "stub") == "stub":
        return None
    schemes = getattr(tf.io.gfile, "get_registered_schemes", None)
    if schemes is None or scheme in schemes():
        return tf.io.gfile
    try:  # TensorBoard does the same: tensorflow-io registers s3://, hdfs://, ...
        import tensorflow_io  # noqa: F401
    except ImportError:
        return None
    return tf.io.gfile if scheme in schemes() else None


def _tensorboard_gfile(scheme: str, path: str) -> Any:
    from tensorboard.compat.tensorflow_stub.io import gfile

    global _s3_endpoint
    if scheme == "s3" and gfile.S3_ENABLED:
        with _lock:
            endpoint = os.environ.get("S3_ENDPOINT")
            if endpoint != _s3_endpoint:  # TensorBoard reads it once, when first imported
                gfile.register_filesystem("s3", gfile.S3FileSystem())
                _s3_endpoint = endpoint
    try:
        gfile.get_filesystem(path)
    except ValueError:
        raise ValueError(
            f"no filesystem for {path!r}: s3:// needs `pip install boto3`; other schemes "
            "need fsspec and its backend (gs:// needs `pip install gcsfs`), or TensorFlow "
            "with tensorflow-io"
        ) from None
    return gfile


def gfile(path: str) -> Any:
    """The gfile module that reads and writes the URL `path`."""
    scheme = path.split("://", 1)[0]
    return _tensorflow_gfile(scheme) or _tensorboard_gfile(scheme, path)


def isdir(path: str) -> bool:
    return gfile(path).isdir(path) if is_url(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
    if is_url(path):
        gfile(path).makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def upload(url: str, data: bytes) -> None:
    """Writes (or replaces) the file at `url` with `data`, in one piece."""
    with gfile(url).GFile(url, "wb") as f:
        f.write(data)


def open_read(path: str, offset: int = 0) -> BinaryIO:
    """`path` opened for binary reading at byte `offset`."""
    if not is_url(path):
        f = open(path, "rb")
        f.seek(offset)
        return f
    f = gfile(path).GFile(path, "rb")
    if hasattr(f, "seek"):
        f.seek(offset)
    else:  # TensorBoard's TensorFlow-free GFile reads forward only
        while offset:
            skipped = len(f.read(min(offset, 1 << 24)))
            if not skipped:
                break
            offset -= skipped
    return f


def walk(top: str, sizes: dict[str, int] | None = None) -> Iterator[tuple[str, list[str]]]:
    """(directory, names of its files) for `top` and every directory below it.

    With `sizes`, the size of each file the listing itself gives (S3 through
    TensorBoard's gfile: one LIST request per 1,000 objects instead of a HEAD per
    object) is added to it under the file's path; other files must be stat'ed.

    Local directories are walked following symlinks, as TensorBoard's loaders do
    (a run reached through a link is named by the link's path), except a link
    back to a directory above it (a loop), which is skipped. URLs are listed as
    TensorBoard lists them: object stores by globbing one level deeper at a time,
    other filesystems by walking.
    """
    if not is_url(top):
        yield from _walk_local(top)
        return
    g = gfile(top)
    if top.startswith("s3://") and sizes is not None and _stub_s3(g, top):
        yield from _walk_s3(g.get_filesystem(top), top, sizes)
        return
    if not top.startswith(_GLOBBED):
        for dirpath, _, filenames in g.walk(top):
            yield dirpath, list(filenames)
        return
    pattern = posixpath.join(_escape_glob(top.rstrip("/")), "*")
    seen: set[str] = set()
    while True:
        by_dir: dict[str, list[str]] = {}
        for found in g.glob(pattern):
            if found not in seen:
                seen.add(found)
                by_dir.setdefault(posixpath.dirname(found), []).append(posixpath.basename(found))
        if not by_dir:
            return
        yield from by_dir.items()
        if len(by_dir) == 1:  # one deep directory: glob below it
            pattern = posixpath.join(_escape_glob(next(iter(by_dir))), "*")
        pattern = posixpath.join(pattern, "*")


def _walk_local(top: str) -> Iterator[tuple[str, list[str]]]:
    # real paths of each directory's ancestors (itself included): a link to one is a loop
    above: dict[str, frozenset[str]] = {top: frozenset([os.path.realpath(top)])}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        chain = above.pop(dirpath, frozenset())
        kept = []
        for name in sorted(dirnames):
            path = os.path.join(dirpath, name)
            real = os.path.realpath(path)
            if real in chain:
                logger.debug("%s leads back to %s (a symlink loop): not followed", path, real)
                continue
            above[path] = chain | {real}
            kept.append(name)
        dirnames[:] = kept
        yield dirpath, filenames


def _stub_s3(g: Any, top: str) -> bool:
    """Whether `g` is TensorBoard's TensorFlow-free gfile reading `top` with boto3."""
    return hasattr(g, "get_filesystem") and isinstance(g.get_filesystem(top), g.S3FileSystem)


def _walk_s3(s3fs: Any, top: str, sizes: dict[str, int]) -> Iterator[tuple[str, list[str]]]:
    """What TensorBoard's S3 glob of ``top/*`` lists (every object below `top`), with sizes."""
    import boto3

    bucket, prefix = s3fs.bucket_and_path(top.rstrip("/") + "/")
    client = boto3.client("s3", endpoint_url=s3fs._s3_endpoint)
    by_dir: dict[str, list[str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            if len(o["Key"]) > len(prefix):
                path = f"s3://{bucket}/{o['Key']}"
                sizes[path] = int(o["Size"])
                by_dir.setdefault(posixpath.dirname(path), []).append(posixpath.basename(path))
    yield from by_dir.items()


def read_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a filesystem raises for a file that vanished or failed to read:
    OSError, ValueError, TensorBoard's and TensorFlow's ``OpError``, botocore's errors."""
    from tensorboard.compat.tensorflow_stub import errors

    found: list[type[BaseException]] = [OSError, ValueError, errors.OpError]
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(getattr(tf, "errors", None), "OpError"):
        found.append(tf.errors.OpError)
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None:
        found += [botocore.BotoCoreError, botocore.ClientError]
    return tuple(found)


def _escape_glob(path: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def size(path: str) -> int:
    """The size of the file at `path` in bytes."""
    if not is_url(path):
        return os.stat(path).st_size
    return int(gfile(path).stat(path).length)


def read_ranges(path: str, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of each contiguous (offset, size) range in `ranges`, in one positioned read
    of them all (one ranged GET on object stores; locally one read per range, no copies)."""
    if is_url(path):
        first = ranges[0][0]
        data = read_at(path, first, ranges[-1][0] + ranges[-1][1] - first)
        return [data[o - first : o - first + n] for o, n in ranges]
    fd = os.open(path, os.O_RDONLY)
    try:
        return [os.pread(fd, n, o) for o, n in ranges]
    finally:
        os.close(fd)


def read_at(path: str, offset: int, size: int) -> bytes:
    """Up to `size` bytes of `path` from byte `offset`: one positioned read.

    On object stores this is one ranged GET (TensorBoard's TensorFlow-free S3
    filesystem reads ranges; TensorFlow's gfile seeks).
    """
    if not is_url(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)
    g = gfile(path)
    if hasattr(g, "get_filesystem"):  # TensorBoard's own gfile: read the range directly
        token = {"byte_offset": offset, "opaque_offset": offset}
        data, _ = g.get_filesystem(path).read(path, True, size, continue_from=token)
        return bytes(data[:size])  # its S3 range is inclusive: one byte more
    with g.GFile(path, "rb") as f:
        f.seek(offset)
        return f.read(size)
