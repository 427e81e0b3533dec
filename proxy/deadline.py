"""``asyncio.timeout`` for the request path, given its task and loop instead of looking them up.

The semantics are asyncio's: when the time is up the task is cancelled, and the
cancellation leaves the ``with`` block as ``TimeoutError``, unless someone else
cancelled the task too (then it stays a cancellation). Nested deadlines each
catch only their own. What differs is the cost: ``asyncio.timeout`` finds the
running loop and the current task on every use, and on CPython 3.11 each look-up
is a ``getpid`` system call; on a request path that runs two deadlines that is
six system calls per request, as many as the request's own socket I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def deadline(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[None], seconds: float | None
) -> Iterator[None]:
    """Cancel ``task`` (the one running the block) after ``seconds``; ``None``: no limit."""
    if seconds is None:
        yield
        return
    cancelling = task.cancelling()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    handle = loop.call_later(seconds, expire)
    try:
        yield
    except asyncio.CancelledError as exc:
        if expired and task.uncancel() <= cancelling:
            raise TimeoutError from exc
        raise
    finally:
        handle.cancel()
