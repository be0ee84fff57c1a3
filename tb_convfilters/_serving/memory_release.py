"""Keeping TensorBoard's memory flat while its loaders read our (big) records.

TensorBoard keeps one step per tag of ours; the plugin's index serves the rest
from disk. Two things still made TensorBoard's memory grow with the bytes read:

* Python loader (``--load_fast=false``): protobuf's upb parser lets a parsed
  ``Event`` alias the bytes it was read from, and any part of it keeps them
  alive. TensorBoard keeps the first ``SummaryMetadata`` of every tag
  (``EventAccumulator.summary_metadata``): that pins the whole first record of
  each of our tags (payload included) beside the step it keeps. `Releaser`
  swaps those for detached copies after each reload that read our data, then
  returns the freed heap to the OS (glibc ``malloc_trim``).
* Rust data server (``--load_fast=true``): glibc raises its mmap threshold
  after the first big free, so later records come from arenas that do not
  shrink. `set_data_server_env` fixes the threshold at 4 MiB for the data
  server TensorBoard spawns, unless the user set one.

Both are no-ops off glibc. ``--convfilters_release_memory=false`` turns them off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import threading
import weakref
from typing import Any

from tensorboard.compat.proto import summary_pb2

from tb_convfilters._record import metadata

logger = logging.getLogger(__name__)

# M_MMAP_THRESHOLD kept fixed instead of rising: the biggest buffers (kernels of a few MiB
# and up, most of the bytes) are mapped and go back to the OS when freed. glibc's initial
# 128 KiB gave a little less memory (0.059 vs 0.065 of the bytes read) for twice the CPU.
MMAP_THRESHOLD = 4 << 20
_MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"


def _glibc() -> Any:
    """glibc (ctypes), or None on any other C library."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


def trim() -> bool:
    """Returns the free pages of every malloc arena to the OS (glibc); False elsewhere."""
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True


def set_data_server_env() -> bool:
    """Sets glibc's mmap threshold for subprocesses (the Rust data server) unless set.

    glibc reads ``MALLOC_MMAP_THRESHOLD_`` when a process starts; TensorBoard
    spawns its data server after the plugin loaders fixed the flags and before
    it loads the plugins (`unset_data_server_env` then). Returns whether it set
    the variable.
    """
    if _LIBC is None or _MMAP_ENV in os.environ:
        return False
    os.environ[_MMAP_ENV] = str(MMAP_THRESHOLD)
    return True


def unset_data_server_env() -> None:
    """Takes back what `set_data_server_env` set, so later subprocesses do not inherit it."""
    if os.environ.get(_MMAP_ENV) == str(MMAP_THRESHOLD):
        del os.environ[_MMAP_ENV]


def detach_metadata(multiplexer: Any, done: dict) -> int:
    """Replaces the ``SummaryMetadata`` TensorBoard keeps for each tag of ours by a copy.

    The one kept comes from the tag's first record and keeps all of its bytes
    alive; a copy holds the metadata only. `done` maps (run, tag) to the copy
    already put in place (kept between calls). Returns how many were replaced.
    """
    replaced = 0
    for run, tags in multiplexer.PluginRunToTagToContent(metadata.PLUGIN_NAME).items():
        try:
            kept = multiplexer.GetAccumulator(run).summary_metadata
        except KeyError:  # the run went away meanwhile
            continue
        for tag in tags:
            meta = kept.get(tag)
            if meta is None or done.get((run, tag)) is meta:
                continue
            copy = summary_pb2.SummaryMetadata()
            copy.CopyFrom(meta)
            kept[tag] = done[(run, tag)] = copy
            replaced += 1
    return replaced


def _kept_steps(multiplexer: Any) -> dict:
    """(step, wall_time) of the step TensorBoard keeps of each tag of ours."""
    out = {}
    for run, tags in multiplexer.PluginRunToTagToContent(metadata.PLUGIN_NAME).items():
        try:
            acc = multiplexer.GetAccumulator(run)
            for tag in tags:
                kept = acc.Tensors(tag)
                out[(run, tag)] = (kept[-1].step, kept[-1].wall_time) if kept else None
        except KeyError:
            continue
    return out


class Releaser:
    """Every `interval` seconds: if TensorBoard's multiplexer read records of ours,
    detaches the metadata they pin (`detach_metadata`) and trims the heap (`trim`).

    Its thread ends once the multiplexer is gone (it holds a weak reference).
    """

    def __init__(self, multiplexer: Any, interval: float):
        self._multiplexer = weakref.ref(multiplexer)
        self._interval = interval
        self._done: dict = {}
        self._seen: dict = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def release(self) -> bool:
        """One round; returns whether it found new data of ours (and trimmed)."""
        multiplexer = self._multiplexer()
        if multiplexer is None:
            return False
        seen = _kept_steps(multiplexer)
        replaced = detach_metadata(multiplexer, self._done)
        for key in set(self._done) - set(seen):
            del self._done[key]
        if not replaced and seen == self._seen:
            return False
        self._seen = seen
        trim()
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="convfilters-release", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval) and self._multiplexer() is not None:
            try:
                self.release()
            except Exception:  # never take TensorBoard down, nor log it every round
                logger.warning(
                    "convfilters: giving back memory failed (TensorBoard's internals may "
                    "differ from the ones this plugin knows); stopped. "
                    "--convfilters_release_memory=false turns it off",
                    exc_info=True,
                )
                return
