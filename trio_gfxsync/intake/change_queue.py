"""The way from the scanners to the readers: two lanes, live changes always first.

A change the agent sees while it runs (a hand just ended) must never wait behind the startup
backfill of old archives. Scanners put live changes on the live lane and backfill on the other;
readers take from the live lane whenever it holds anything. Both lanes are bounded, which is the
backpressure: a slow uploader makes the scanners wait, and the NAS stays the source of truth.

Like a memory channel it ends by itself: each producer is a context manager (`producer()`), and
once every producer has closed and the lanes are empty, `get` raises trio.EndOfChannel.
"""

from __future__ import annotations

from collections import deque
from types import TracebackType

import trio
from trio.lowlevel import ParkingLot

from .tracker import FileChange


class ChangeQueue:
    def __init__(self, *, live_limit: int = 8, backfill_limit: int = 2) -> None:
        self._lanes: dict[bool, deque[FileChange]] = {True: deque(), False: deque()}
        self._limits = {True: live_limit, False: backfill_limit}
        self._readable = ParkingLot()
        self._writable = {True: ParkingLot(), False: ParkingLot()}
        self._producers = 0
        self._opened = False

    def __len__(self) -> int:
        return len(self._lanes[True]) + len(self._lanes[False])

    def producer(self) -> Producer:
        self._producers += 1
        self._opened = True
        return Producer(self)

    def _close_one(self) -> None:
        self._producers -= 1
        if self._producers == 0:
            self._readable.unpark_all()

    @property
    def closed(self) -> bool:
        return self._opened and self._producers == 0

    async def put(self, change: FileChange, *, live: bool) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        lane = self._lanes[live]
        while len(lane) >= self._limits[live]:
            await self._writable[live].park()
        lane.append(change)
        self._readable.unpark()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def put_back(self, change: FileChange) -> None:
        """A change a reader took and set aside (its PC's read hung): first in its lane again,
        at once and over the limit (it was counted when it first came in), never dropped."""
        self._lanes[change.live].appendleft(change)
        self._readable.unpark()

    async def get(self) -> FileChange:
        while True:
            for live in (True, False):
                lane = self._lanes[live]
                if lane:
                    change = lane.popleft()
                    self._writable[live].unpark()
                    # taken is taken: a cancellation here must not drop the change
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return change
            if self.closed:
                raise trio.EndOfChannel
            await self._readable.park()


class Producer:
    """One scanner's handle on the queue; closing the last one ends the stream."""

    def __init__(self, queue: ChangeQueue) -> None:
        self._queue: ChangeQueue | None = queue

    async def put(self, change: FileChange, *, live: bool) -> None:
        if self._queue is None:
            raise trio.ClosedResourceError("this producer is closed")
        await self._queue.put(change, live=live)

    def put_back(self, change: FileChange) -> None:
        if self._queue is not None:
            self._queue.put_back(change)

    def close(self) -> None:
        if self._queue is not None:
            self._queue._close_one()
            self._queue = None

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
