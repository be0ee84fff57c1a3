"""The worker thread that large reductions, casts, checksums and copies share with the
calling thread (numpy and ``crc32c`` release the GIL), at the caller's priority."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

# Arrays of at least this many bytes are reduced, cast and checksummed on two threads.
PARALLEL_MIN_BYTES = 1 << 20
# A plain copy (no cast) is memory-bound: handing half to the worker (~25 us to wake it)
# pays only from this size (measured on an AMD EPYC; casts pay from PARALLEL_MIN_BYTES).
COPY_PARALLEL_MIN_BYTES = 4 << 20
_WORKER = "tb_convfilters"
_pools: dict[int, ThreadPoolExecutor] = {}  # by the nice value of the threads they serve
_pools_lock = threading.Lock()
_pool_pid = 0


def _nice() -> int:
    """This thread's nice value (Linux sets it per thread; elsewhere 0)."""
    if not sys.platform.startswith("linux"):  # there, a thread id is no process id
        return 0
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def set_nice(nice: int) -> None:
    """Raises this thread's nice value to `nice` (Linux; never lowers it, elsewhere a no-op)."""
    if nice > _nice():
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:  # not allowed here: run at the priority we have
            pass


def _worker() -> ThreadPoolExecutor:
    """The worker for this thread: a background writer's low-priority thread gets a
    low-priority worker, so training threads come first on both."""
    global _pools, _pool_pid
    nice = _nice()
    with _pools_lock:
        if _pool_pid != os.getpid():  # a forked child has no worker thread
            _pools, _pool_pid = {}, os.getpid()
        pool = _pools.get(nice)
        if pool is None:
            pool = _pools[nice] = ThreadPoolExecutor(
                1, thread_name_prefix=_WORKER, initializer=set_nice, initargs=(nice,)
            )
    return pool


def in_parallel(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    """Runs `first` on a worker thread and `second` here (numpy releases the GIL).

    `first` must not call this itself; on the worker thread both run in turn.
    """
    if threading.current_thread().name.startswith(_WORKER):
        return first(), second()
    try:
        future = _worker().submit(first)
    except RuntimeError:  # interpreter exit shut the worker down: a Writer's last records
        return first(), second()
    try:
        second_result = second()
    finally:
        first_result = future.result()
    return first_result, second_result


def both(first: Callable[[], Any], second: Callable[[], Any], *, split: bool) -> tuple[Any, Any]:
    """`first` and `second`: on two threads (`in_parallel`) when `split`, else in turn here."""
    if split:
        return in_parallel(first, second)
    return first(), second()


def copyto(dst: np.ndarray, src: np.ndarray, casting: str = "no") -> None:
    """``np.copyto(dst, src)`` of same-shaped arrays; large ones in halves on two threads
    (one thread's copy is far from the memory bandwidth of two cores)."""
    least = COPY_PARALLEL_MIN_BYTES if src.dtype == dst.dtype else PARALLEL_MIN_BYTES
    if src.nbytes >= least and src.flags.c_contiguous and dst.flags.c_contiguous:
        src, dst = src.reshape(-1), dst.reshape(-1)
    if src.nbytes < least or src.ndim == 0 or src.shape[0] < 2:
        _copy(dst, src, casting)
        return
    mid = src.shape[0] // 2
    in_parallel(
        lambda: _copy(dst[:mid], src[:mid], casting), lambda: _copy(dst[mid:], src[mid:], casting)
    )


def _copy(dst: np.ndarray, src: np.ndarray, casting: str) -> None:
    with np.errstate(all="ignore"):  # per thread; a cast's overflow is reported by its caller
        np.copyto(dst, src, casting=casting)
