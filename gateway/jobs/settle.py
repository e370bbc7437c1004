"""Waiting for work that must finish even when its waiter is cancelled.

A cancelled job must not let its engines go while they still work for it, nor remove its
folder while a thread still writes into it. These helpers wait for such work to end, however
often the waiting task is cancelled meanwhile, and then pass the cancellation on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def settled(work: Awaitable) -> None:
    """Wait until `work` has ended (its result or error is left on it); raise CancelledError
    afterwards if this task was cancelled meanwhile."""
    future = asyncio.ensure_future(work)
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not future.cancelled():
            future.exception()  # seen: the caller goes on with its cancellation instead
        raise asyncio.CancelledError


async def all_settled(tasks: list[asyncio.Task]) -> None:
    """`settled` for several tasks at once."""
    if tasks:
        await settled(asyncio.gather(*tasks, return_exceptions=True))
