"""proxy.deadline: asyncio.timeout's meaning, with the task and loop given."""

from __future__ import annotations

import asyncio

import pytest

from proxy.deadline import deadline


def current() -> tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]:
    task = asyncio.current_task()
    assert task is not None
    return asyncio.get_running_loop(), task


async def test_a_block_that_overruns_ends_in_timeout_error() -> None:
    loop, task = current()
    with pytest.raises(TimeoutError), deadline(loop, task, 0.01):
        await asyncio.Event().wait()
    assert task.cancelling() == 0, "the deadline's own cancellation is taken back"


async def test_a_block_that_finishes_in_time_is_left_alone() -> None:
    loop, task = current()
    with deadline(loop, task, 5):
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)  # nothing fires later: the timer was cancelled
    assert task.cancelling() == 0


async def test_none_means_no_limit() -> None:
    loop, task = current()
    with deadline(loop, task, None):
        await asyncio.sleep(0.01)


async def test_the_inner_of_two_catches_only_its_own() -> None:
    loop, task = current()
    with deadline(loop, task, 5):
        with pytest.raises(TimeoutError), deadline(loop, task, 0.01):
            await asyncio.Event().wait()
        await asyncio.sleep(0)  # the outer one still runs


async def test_the_outer_of_two_expires_through_the_inner() -> None:
    loop, task = current()
    with pytest.raises(TimeoutError), deadline(loop, task, 0.01), deadline(loop, task, 5):
        await asyncio.Event().wait()


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    started = asyncio.Event()

    async def guarded() -> None:
        loop, task = current()
        with deadline(loop, task, 5):
            started.set()
            await asyncio.Event().wait()

    runner = asyncio.create_task(guarded())
    await started.wait()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
