"""What the background writer could not do, raised by the Writer's next call."""

from __future__ import annotations

import warnings

from tb_convfilters._writing.copy_queue import CopyQueue


class WriterError(RuntimeError):
    """A record the background writer could not write, raised on a later call.

    ``tag`` and ``step`` name the record (None for an upload of several);
    ``__cause__`` is the original error. Raised by a call that logs, it is about an
    earlier record: the call's own record was queued (or, on a URL logdir, buffered).
    """

    def __init__(self, message: str, tag: str | None = None, step: int | None = None):
        super().__init__(message)
        self.tag, self.step = tag, step


def report(writer: object, queue: CopyQueue | None, stacklevel: int) -> None:
    """Issues the background thread's warnings and raises its first failure.

    The error names `writer`, the first failed record and the later ones.
    """
    if queue is None:
        return
    for message in queue.take_messages():
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)
    failures = queue.take_failures()
    if not failures:
        return
    (tag, step), error = failures[0]
    more = ""
    if len(failures) > 1:
        later = [f"{t!r} step {n}" if n is not None else "an upload" for (t, n), _ in failures[1:]]
        shown = ", ".join(later[:5]) + (f" and {len(later) - 5} more" if len(later) > 5 else "")
        more = f"; later ones failed too: {shown}"
    if isinstance(error, WriterError):  # an upload: it says what
        raise WriterError(f"{error}{more}") from error.__cause__
    raise WriterError(
        f"{writer!r} could not write tag {tag!r} step {step}: "
        f"{type(error).__name__}: {error}{more}",
        tag,
        step,
    ) from error
