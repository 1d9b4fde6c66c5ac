"""direct._Due, the deadline of one asyncio command: last looks for a reply that has arrived.

A fake connection stands for redis-py's: `_Due` asks only whether its stream's buffer holds
unread bytes (direct._arrived). The reply is a future resolved after a number of loop turns.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from fashionai_pipeline.producers import direct
from fashionai_pipeline.producers.direct import _Due


def _conn(unread: bytes) -> SimpleNamespace:
    return SimpleNamespace(_reader=SimpleNamespace(_buffer=bytearray(unread)), _writer=None)


async def _reply_after(turns: int, conn: SimpleNamespace) -> str:
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[str] = loop.create_future()

    def turn(left: int) -> None:
        if left == 0:
            reply.set_result("reply")
        else:
            loop.call_soon(turn, left - 1)

    loop.call_soon(turn, turns)
    with _Due(loop.time() - 1.0, conn):  # the deadline has passed already
        return await reply


def test_a_reply_that_has_arrived_unread_gets_the_last_looks():
    assert asyncio.run(_reply_after(direct.LAST_LOOKS - 1, _conn(b"+OK\r\n"))) == "reply"


def test_the_last_looks_are_bounded():
    with pytest.raises(TimeoutError, match="no reply within the bound"):
        asyncio.run(_reply_after(direct.LAST_LOOKS + 2, _conn(b"+OK\r\n")))


def test_nothing_arrived_is_given_up_at_the_deadline():
    with pytest.raises(TimeoutError, match="no reply within the bound"):
        asyncio.run(_reply_after(1, _conn(b"")))


def test_a_reply_before_the_deadline_cancels_the_timer():
    async def main() -> tuple[str, bool]:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[str] = loop.create_future()
        loop.call_soon(reply.set_result, "reply")
        due = _Due(loop.time() + 0.05, _conn(b""))
        with due:
            got = await reply
        await asyncio.sleep(0.1)  # past the deadline: the timer must not cancel the task now
        return got, due.expired

    assert asyncio.run(main()) == ("reply", False)


def test_a_cancellation_from_elsewhere_is_not_turned_into_a_timeout():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with _Due(loop.time() + 5.0, _conn(b"")):
            task = asyncio.current_task()
            assert task is not None
            loop.call_soon(task.cancel)
            await loop.create_future()

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
