"""A local Jetstream: a websocket server on 127.0.0.1 that plays scripted frames.

Frames are shaped as Jetstream's README shows them: ``{"did", "time_us", "kind":
"commit", "commit": {"rev", "operation", "collection", "rkey", "record", "cid"}}`` and the
``identity`` / ``account`` events. Each connection gets the frames whose ``time_us`` is at
or after the ``cursor`` it asked for (all of them without one), then, per the script,
stays open, closes, or is cut in the middle of a frame.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

T_US = 1_725_911_162_000_000
DID = "did:plc:eygmaihciaxprqvxpfvl6flk"


def post(n: int, text: str, *, did: str = DID, root: str | None = None,
         created: str = "2024-09-09T19:46:02.102Z") -> dict[str, Any]:
    record: dict[str, Any] = {"$type": "app.bsky.feed.post", "createdAt": created,
                              "langs": ["en"], "text": text}
    if root:
        record["reply"] = {"root": {"cid": "bafyroot", "uri": root},
                           "parent": {"cid": "bafyroot", "uri": root}}
    return {"did": did, "time_us": T_US + n * 1000, "kind": "commit", "commit": {
        "rev": f"3l3qo2vutsw{n:03d}", "operation": "create",
        "collection": "app.bsky.feed.post", "rkey": f"3l3qo2vuowo{n:03d}",
        "record": record, "cid": f"bafyreidwaivazkwu{n:03d}"}}


def like(n: int) -> dict[str, Any]:
    return {"did": DID, "time_us": T_US + n * 1000, "kind": "commit", "commit": {
        "rev": "3l3qo2vutsw2b", "operation": "create", "collection": "app.bsky.feed.like",
        "rkey": f"3l3qo2vuowo{n:03d}", "record": {
            "$type": "app.bsky.feed.like", "createdAt": "2024-09-09T19:46:02.102Z",
            "subject": {"cid": "bafyreidc6sydkkbc",
                        "uri": "at://did:plc:wa7b35aakoll7hugkrjtf3xf/app.bsky.feed.post/x"}},
        "cid": "bafyreidwaivazkwu67x"}}


def identity(n: int) -> dict[str, Any]:
    return {"did": DID, "time_us": T_US + n * 1000, "kind": "identity", "identity": {
        "did": DID, "handle": "yohenrique.bsky.social", "seq": 1409752997,
        "time": "2024-09-05T06:11:04.870Z"}}


@dataclass
class Script:
    frames: list[Any] = field(default_factory=list)   # dicts, or raw str/bytes as sent
    # per connection, in order: "open" (stay), "close" (clean close), "cut" (mid-frame)
    endings: list[str] = field(default_factory=list)
    cursors: list[str | None] = field(default_factory=list)   # what each connection asked
    refuse: int = 0   # answer the handshake with this HTTP status instead


class FakeJetstream:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.url = ""

    def __enter__(self) -> FakeJetstream:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", 0, process_request=self._check,
                         compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/subscribe"
            self._ready.set()
            await self._stop.wait()

    def _check(self, conn: ServerConnection, request: Request) -> Response | None:
        if self.script.refuse:
            return conn.respond(self.script.refuse, "no such endpoint\n")
        return None

    async def _handle(self, conn: ServerConnection) -> None:
        query = parse_qs(urlsplit(conn.request.path).query)  # type: ignore[union-attr]
        cursor = query.get("cursor", [None])[0]
        self.script.cursors.append(cursor)
        ending = self.script.endings.pop(0) if self.script.endings else "open"
        for frame in self.script.frames:
            if isinstance(frame, dict):
                if cursor is not None and frame["time_us"] < int(cursor):
                    continue
                await conn.send(orjson.dumps(frame).decode())
            else:
                await conn.send(frame)
        if ending == "close":
            await conn.close()
        elif ending == "cut":
            await asyncio.sleep(0.2)
            # the header of a 200-byte text frame, 10 bytes of it, then the line goes dead
            conn.transport.write(b"\x81\x7e\x00\xc8" + b'{"did":"di')
            conn.transport.abort()
        else:
            await conn.wait_closed()


class LiveJetstream(FakeJetstream):
    """A Jetstream that keeps going: ``add(frame)`` sends it to every open connection
    (and to later ones whose cursor is at or before it); ``drop()`` cuts every open
    connection, as a network fault would."""

    def __init__(self) -> None:
        super().__init__(Script())
        self._new: asyncio.Condition | None = None
        self._conns: set[ServerConnection] = set()

    async def _main(self) -> None:
        self._new = asyncio.Condition()
        await super()._main()

    def add(self, frame: dict[str, Any]) -> None:
        async def append() -> None:
            assert self._new is not None
            async with self._new:
                self.script.frames.append(frame)
                self._new.notify_all()
        asyncio.run_coroutine_threadsafe(append(), self.loop).result(10)

    def drop(self) -> None:
        def cut() -> None:
            for conn in list(self._conns):
                conn.transport.abort()
        self.loop.call_soon_threadsafe(cut)

    async def _handle(self, conn: ServerConnection) -> None:
        assert self._new is not None
        query = parse_qs(urlsplit(conn.request.path).query)  # type: ignore[union-attr]
        cursor = query.get("cursor", [None])[0]
        self.script.cursors.append(cursor)
        self._conns.add(conn)
        sent = 0
        try:
            while True:
                async with self._new:
                    await self._new.wait_for(lambda n=sent: len(self.script.frames) > n)
                    batch = self.script.frames[sent:]
                sent += len(batch)
                for frame in batch:
                    if cursor is None or frame["time_us"] >= int(cursor):
                        await conn.send(orjson.dumps(frame).decode())
        except Exception:  # noqa: BLE001 - the connection went (dropped, or the client left)
            pass
        finally:
            self._conns.discard(conn)
