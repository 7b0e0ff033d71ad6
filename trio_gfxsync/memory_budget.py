"""A budget of bytes for records in memory between the readers and the uploads.

Counting records bounds nothing when one record may be 50 MB: the readers acquire a file's bytes
before they read it (the bytes read and the row built from them), the batcher gives them back
when a batch leaves its buffer. A record larger than the whole budget is let through alone,
so nothing can wait for ever.
"""

from __future__ import annotations

import trio
from trio.lowlevel import ParkingLot


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lot = ParkingLot()

    async def acquire(self, nbytes: int) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.used > 0 and self.used + nbytes > self.limit:
            await self._lot.park()
        self.used += nbytes
        await trio.lowlevel.cancel_shielded_checkpoint()

    def release(self, nbytes: int) -> None:
        self.used = max(0, self.used - nbytes)
        self._lot.unpark_all()
