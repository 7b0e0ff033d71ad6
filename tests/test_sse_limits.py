"""One laptop cannot lock the operators out of the dashboard (issue 23, item 5).

The agent's HTTP server (`run_http`: hypercorn under trio, in this process) on a real TCP port,
and real client sockets bound to different loopback addresses (127.0.0.x: each is a client
address of its own to the server). Streams that should stay open are read by tasks of their
own; the stalled client has a small receive buffer and never reads.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from trio_gfxsync.errors import ConfigError
from trio_gfxsync.observe.status import AgentStatus
from trio_gfxsync.settings import load_settings
from trio_gfxsync.web.server import run_http

WRITE_TIMEOUT = 10.0  # the promise: a stalled stream is closed after 10 s without progress
ALL_STREAMS = 16
PER_CLIENT = 4
FAILSAFE = 60  # seconds before a wait that never ends fails the test (not a promise)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes  # what came after the head so far (all of it for a refusal)
    stream: trio.SocketStream
    received: list[int] = field(default_factory=lambda: [0])
    ended: trio.Event = field(default_factory=trio.Event)


async def request_events(
    port: int, source: str, *, rcvbuf: int | None = None, path: str = "/api/events"
) -> Answer:
    """GET /api/events from `source` (a loopback address); the head read, the stream open."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: agent\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        assert chunk, f"the server closed before answering: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    answer = Answer(int(status_line.split()[1]), headers, body, stream)
    if answer.status != 200:
        length = int(headers.get("content-length", "0"))
        while len(answer.body) < length:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            answer.body += chunk
        await stream.aclose()
    return answer


async def keep_reading(answer: Answer) -> None:
    """Read a stream as a live dashboard does, until the server ends it."""
    try:
        while chunk := await answer.stream.receive_some(65536):
            answer.received[0] += len(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # reset by the server, or closed by the test
    finally:
        answer.ended.set()


async def wait_for_event(answer: Answer) -> None:
    while b"event: status\ndata: " not in answer.body:
        chunk = await answer.stream.receive_some(65536)
        assert chunk, "the stream ended before its first event"
        answer.body += chunk


@asynccontextmanager
async def serving(tmp_path: Path, **overrides: object) -> AsyncIterator[tuple[int, AgentStatus]]:
    settings = load_settings(
        target="sqlite",
        nas_base_path=tmp_path / "nas",
        queue_db_path=tmp_path / "queue" / "pending.db",
        health_host="127.0.0.1",
        health_port=0,
        dashboard_token="",
        **overrides,
    )
    status = AgentStatus()
    # a status document of some 50 KB: a client that stops reading fills its socket's buffers
    # within a few events (a real one fills them too, only more slowly)
    for i in range(50):
        status.activity.add("synced", f"event {i} " + "x" * 1000, pc_id="PC01")
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(run_http, settings, status, shutdown)
        port = int(binds[0].rsplit(":", 1)[1])
        try:
            yield port, status
        finally:
            shutdown.set()
            nursery.cancel_scope.deadline = trio.current_time() + 10


async def open_readers(nursery: trio.Nursery, port: int, sources: list[str]) -> list[Answer]:
    answers = []
    for source in sources:
        answer = await request_events(port, source)
        assert answer.status == 200, (source, answer.status, answer.body)
        nursery.start_soon(keep_reading, answer)
        answers.append(answer)
    return answers


def assert_refused(answer: Answer, limit: str) -> None:
    assert answer.status == 429, (answer.status, answer.body)
    retry_after = answer.headers.get("retry-after", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, answer.headers
    document = json.loads(answer.body)
    assert document["limit"] == limit and document["retry_after"] == int(retry_after)
    assert "close one" in document["error"]


async def test_a_fifth_stream_from_one_address_is_refused_while_another_address_gets_one(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as (port, _), trio.open_nursery() as readers:
        laptop = await open_readers(readers, port, ["127.0.0.2"] * PER_CLIENT)

        fifth = await request_events(port, "127.0.0.2")
        assert_refused(fifth, "per_client")
        # the refusal is an answer, not a held connection: the laptop's count did not move
        assert_refused(await request_events(port, "127.0.0.2"), "per_client")

        other = await request_events(port, "127.0.0.3")
        assert other.status == 200, (other.status, other.body)
        assert other.headers["content-type"].startswith("text/event-stream")
        await wait_for_event(other)

        # the laptop closes a dashboard: its place is free again (the server saw it go)
        await laptop[0].stream.aclose()
        with trio.fail_after(FAILSAFE):
            while (again := await request_events(port, "127.0.0.2")).status != 200:
                assert_refused(again, "per_client")
                await trio.sleep(0.1)
        await wait_for_event(again)
        readers.cancel_scope.cancel()


async def test_the_limit_per_address_is_a_setting(tmp_path: Path) -> None:
    """Behind a reverse proxy every dashboard has the proxy's address: the limit is raised."""
    async with (
        serving(tmp_path, dashboard_streams_per_client=6) as (port, _),
        trio.open_nursery() as readers,
    ):
        await open_readers(readers, port, ["127.0.0.4"] * 6)
        assert_refused(await request_events(port, "127.0.0.4"), "per_client")
        readers.cancel_scope.cancel()


async def test_sixteen_streams_in_all_whatever_the_addresses(tmp_path: Path) -> None:
    sources = [f"127.0.0.{10 + i // PER_CLIENT}" for i in range(ALL_STREAMS)]
    async with serving(tmp_path) as (port, _), trio.open_nursery() as readers:
        await open_readers(readers, port, sources)
        assert_refused(await request_events(port, "127.0.0.30"), "total")
        assert_refused(await request_events(port, "127.0.0.31"), "total")
        readers.cancel_scope.cancel()


async def test_a_client_that_stops_reading_loses_its_stream_and_its_place(
    tmp_path: Path,
) -> None:
    """Every place taken, one by a client that stopped reading: the server closes that stream
    once a write has waited WRITE_TIMEOUT, and a newcomer gets its place; the readers keep
    theirs."""
    healthy = [f"127.0.0.{20 + i // PER_CLIENT}" for i in range(ALL_STREAMS - 1)]
    async with serving(tmp_path) as (port, _), trio.open_nursery() as readers:
        stalled = await request_events(port, "127.0.0.40", rcvbuf=4096)
        try:
            stalled_at = trio.current_time()
            assert stalled.status == 200, (stalled.status, stalled.body)
            live = await open_readers(readers, port, healthy)

            refusals = []
            with trio.move_on_after(FAILSAFE) as waited:
                while (newcomer := await request_events(port, "127.0.0.50")).status != 200:
                    refusals.append(newcomer.status)
                    await trio.sleep(0.5)
            assert not waited.cancelled_caught, (
                f"the stalled stream still holds its place after {FAILSAFE} s: every newcomer was "
                f"refused ({len(refusals)} times, {sorted(set(refusals))})"
            )
            freed_after = trio.current_time() - stalled_at
            assert refusals and set(refusals) == {429}, refusals
            assert freed_after >= WRITE_TIMEOUT, f"closed after {freed_after:.1f} s"
            await wait_for_event(newcomer)

            # the server closed the stalled connection: what it holds is read, then the end
            with trio.fail_after(FAILSAFE):
                try:
                    while await stalled.stream.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass  # a reset is a close too
            # the readers were never touched: every one still open and fed
            counts = [answer.received[0] for answer in live]
            with trio.fail_after(FAILSAFE):
                for answer, before in zip(live, counts, strict=True):
                    while answer.received[0] == before:
                        assert not answer.ended.is_set(), "a reading dashboard was closed"
                        await trio.sleep(0.1)
            assert not any(answer.ended.is_set() for answer in live)
            print(f"sse: the stalled stream was closed {freed_after:.1f} s after it opened")
            readers.cancel_scope.cancel()
        finally:
            await stalled.stream.aclose()  # else a server that never closes it cannot stop


@pytest.mark.parametrize("per_client", [0, 17])
def test_the_setting_is_checked(per_client: int) -> None:
    with pytest.raises(ConfigError, match="GFX_SYNC_DASHBOARD_STREAMS_PER_CLIENT"):
        load_settings(target="sqlite", dashboard_streams_per_client=per_client)
