"""A background writer's copy queue: copies of logged arrays waiting for its thread, bounded
in bytes.

``CopyQueue.put`` takes one copy of an array (into a reused buffer: the same model
logs the same shapes every step, and fresh memory costs page faults), queues it
with the work to do on it and returns; one daemon thread does the work in
order, starting once the calls pause (a step's calls copy faster with both
cores free). Copies in flight never exceed the queue's limit: a ``put`` beyond it
waits (back-pressure). Failures and warnings of the work are kept for the
caller to raise and issue (``take_failures``, ``take_messages``); nothing is
dropped.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from tb_convfilters._record import parallel

THREAD_NAME = "convfilters-writer"
# The thread's nice value (Linux; its stats helper in parallel.in_parallel inherits it): training
# threads come first when cores are short, and idle cores still do all the writing.
NICE = 10
# The thread starts on queued copies once calls have paused this long (or the first has
# waited MAX_DELAY): a step's burst of calls then copies with both cores free.
QUIET_SECONDS = 0.002
MAX_DELAY = 0.1
# The thread ends after this many idle seconds (and starts again on the next put), so an
# idle queue whose writer was dropped can be collected.
IDLE_SECONDS = 30.0


class _Job(NamedTuple):
    work: Callable[[Any], str | None]
    array: np.ndarray | None
    nbytes: int
    buffer: np.ndarray | None  # the reusable buffer under `array`, if it is a copy
    what: Any


class CopyQueue:
    """Work on array copies, done in order on one background thread.

    `limit` bounds the bytes of copies in flight plus idle reusable buffers
    (one array larger than it still passes, alone).
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._cond = threading.Condition()
        self._queue: collections.deque[_Job] = collections.deque()
        self._in_flight = 0  # bytes of queued and running jobs' arrays
        self._submitted = 0
        self._done = 0
        self._idle: dict[tuple, list[np.ndarray]] = {}  # (nbytes,) -> free buffers
        self._idle_bytes = 0
        self._failures: list[tuple[Any, BaseException]] = []
        self._messages: list[str] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_put = 0.0  # time.monotonic() of the last job queued
        self._waiters = 0  # callers in `wait`: no more calls are coming from them
        self._busy = False  # a job is running (on the thread or a waiting caller)

    # ---- the calling side ----

    def put(
        self,
        work: Callable[[Any], str | None],
        array: np.ndarray | None,
        what: Any,
        owned: bool = False,
    ) -> None:
        """Queues ``work(copy of array)`` (``work(None)`` without one); waits while full.

        An `owned` array (one no caller can change) is queued as is. `work` may
        return a warning message; `what` names the job in failures.
        """
        nbytes = 0 if array is None else array.nbytes
        with self._cond:
            if self._closed:
                raise ValueError("the Writer is closed")
            while self._in_flight and self._in_flight + nbytes > self.limit:
                self._cond.wait(1.0)  # back-pressure: the thread frees room as it writes
                self._start()
            self._in_flight += nbytes
            buffer = None if array is None or owned else self._reuse(array)
        try:
            if array is not None and not owned:
                if buffer is None:
                    buffer = np.empty(nbytes, np.uint8)
                copy = buffer.view(array.dtype).reshape(array.shape)
                parallel.copyto(copy, array)  # one memcpy (two halves at once when large)
                array = copy
        except BaseException:
            with self._cond:
                self._in_flight -= nbytes
                self._cond.notify_all()
            raise
        with self._cond:
            self._queue.append(_Job(work, array, nbytes, buffer, what))
            self._last_put = time.monotonic()
            self._submitted += 1
            self._start()
            self._cond.notify_all()

    def _start(self) -> None:
        """Starts the thread if there is work and no live thread for it (lock held)."""
        if self._queue and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def _reuse(self, array: np.ndarray) -> np.ndarray | None:
        """An idle buffer of `array`'s size (lock held), making room under the limit if not."""
        key = (array.nbytes,)
        if key in self._idle:
            return self._take_idle(key)
        while self._idle and self._in_flight + self._idle_bytes > self.limit:
            self._take_idle(next(iter(self._idle)))  # dropped: room for a new one
        return None

    def _take_idle(self, key: tuple) -> np.ndarray:
        """An idle buffer out of the pool (lock held); no key is left with none."""
        free = self._idle[key]
        buffer = free.pop()
        if not free:
            del self._idle[key]
        self._idle_bytes -= buffer.nbytes
        return buffer

    def wait(self) -> None:
        """Returns once every job queued before this call is done.

        The caller does the jobs the thread has not started itself, in order: it waits
        anyway, and the thread's low priority would make it wait longer while training
        threads still run.
        """
        with self._cond:
            target = self._submitted
            self._waiters += 1
            self._cond.notify_all()  # the thread need not wait for calls to pause
            try:
                while self._done < target:
                    if self._queue and not self._busy:
                        self._run_one()
                    else:
                        self._cond.wait(1.0)
                        self._start()
            finally:
                self._waiters -= 1

    def take_failures(self) -> list[tuple[Any, BaseException]]:
        """The failures since the last call: (what, exception), oldest first."""
        with self._cond:
            failures, self._failures = self._failures, []
        return failures

    def take_messages(self) -> list[str]:
        """The warnings the work returned since the last call, oldest first."""
        with self._cond:
            messages, self._messages = self._messages, []
        return messages

    def close(self) -> None:
        """Waits for every queued job, then stops the thread and frees the buffers."""
        self.wait()
        with self._cond:
            self._closed = True
            self._idle.clear()
            self._idle_bytes = 0
            self._cond.notify_all()  # the thread sees it and ends; nothing is left for it

    # ---- the thread ----

    def _let_calls_finish(self) -> None:
        """Waits (lock held) while calls are still queueing copies, up to MAX_DELAY (not
        while a caller waits for the queue: its calls are done)."""
        start = time.monotonic()
        while (
            not self._closed and not self._waiters and (now := time.monotonic()) - start < MAX_DELAY
        ):
            left = self._last_put + QUIET_SECONDS - now
            if left <= 0:
                return
            self._cond.wait(left)

    def _run(self) -> None:
        parallel.set_nice(NICE)
        while True:
            with self._cond:
                while not self._queue or self._busy:
                    if self._closed or not self._cond.wait(IDLE_SECONDS) and not self._queue:
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
                self._let_calls_finish()
                if self._queue and not self._busy:  # a waiting caller may have taken them
                    self._run_one()

    def _run_one(self) -> None:
        """Does the first queued job (lock held on entry and exit, released while it runs)."""
        self._busy = True
        job = self._queue[0]
        self._cond.release()
        message, failed = None, False
        try:
            message = job.work(job.array)
        except BaseException as e:  # kept for the caller; the thread goes on
            failed = True
            with self._cond:
                self._failures.append((job.what, e))
        finally:
            self._cond.acquire()
            self._busy = False
        self._queue.popleft()
        self._in_flight -= job.nbytes
        self._done += 1
        if message:
            self._messages.append(message)
        if (
            job.buffer is not None
            and not failed  # a traceback may still hold a view of it
            and not self._closed
            and self._in_flight + self._idle_bytes + job.nbytes <= self.limit
        ):
            self._idle.setdefault((job.nbytes,), []).append(job.buffer)
            self._idle_bytes += job.nbytes
        self._cond.notify_all()
