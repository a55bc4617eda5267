"""The HTTP client: lists, watch streams and errors, on real sockets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from globaldns.sources.k8s import api, credentials
from tests.helpers.k8s import FIXTURES, serve
from tests.helpers.wait import eventually
from tests.k8s import emulator as em


def client_for(url: str, tmp_path: Path, **kw: Any) -> api.ApiClient:
    kubeconfig = {"apiVersion": "v1", "kind": "Config",
                  "clusters": [{"name": "x", "cluster": {"server": url}}],
                  "users": [{"name": "x", "user": {"token": "t"}}],
                  "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
                  "current-context": "x"}
    creds = credentials.from_kubeconfig_text(json.dumps(kubeconfig), origin="test",
                                             allow_insecure=True)
    return api.ApiClient(creds, **kw)


async def collect(client: api.ApiClient, rv: str, *, idle: float = 2.0,
                  into: list[Any] | None = None) -> list[Any]:
    """The events of a watch until it ends, then its error; in `into` as they come."""
    got: list[Any] = [] if into is None else into
    try:
        async with client.watch(api.SERVICES, resource_version=rv,
                                idle_timeout=idle) as events:
            async for event in events:
                got.append((event["type"], event["object"]["metadata"]))
    except api.KubernetesError as exc:
        got.append(exc)
    return got


async def test_the_client_python_watch_stream_split_anywhere_gives_events_then_410(
        tmp_path: Path) -> None:
    stream = (FIXTURES / "watch-stream.client-python-tests.jsonl").read_bytes()

    async def watch(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(stream), 37):  # chunks that cut lines and JSON anywhere
            await response.write(stream[i:i + 37])
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/api/v1/services", watch)
    runner, url = await serve(app)
    client = client_for(url, tmp_path)
    try:
        got = await collect(client, "1")
    finally:
        await client.close()
        await runner.cleanup()
    assert [g[0] for g in got[:4]] == ["ADDED", "ADDED", "ADDED", "BOOKMARK"]
    assert [g[1]["name"] for g in got[:3]] == ["test1", "test2", "test3"]
    # The test's minimal ERROR object (reason Gone, no kind) is a 410 all the same.
    assert isinstance(got[4], api.Gone) and got[4].reason == "Gone"


async def test_an_expired_continue_token_restarts_the_list_in_one_page(
        tmp_path: Path) -> None:
    expired = (FIXTURES / "status-410-expired-continue.json").read_text()
    seen: list[dict[str, str]] = []

    async def lister(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        if "continue" in request.query:
            return web.Response(status=410, text=expired, content_type="application/json")
        items = [{"metadata": {"name": f"s{i}", "namespace": "ns"}} for i in range(3)]
        limit = int(request.query.get("limit", 0))
        meta = {"resourceVersion": "77"}
        if limit:
            items = items[:limit]
            meta["continue"] = "token-1"
        return web.json_response({"kind": "ServiceList", "apiVersion": "v1",
                                  "metadata": meta, "items": items})

    app = web.Application()
    app.router.add_get("/api/v1/services", lister)
    runner, url = await serve(app)
    client = client_for(url, tmp_path, page_size=2)
    try:
        result = await client.list(api.SERVICES)
    finally:
        await client.close()
        await runner.cleanup()
    assert [q.get("continue") for q in seen] == [None, "token-1", None]
    assert "limit" not in seen[-1]
    assert [i["metadata"]["name"] for i in result.items] == ["s0", "s1", "s2"]
    assert (result.resource_version, result.restarts) == ("77", 1)


async def test_paginated_list_from_the_emulator_is_one_snapshot(tmp_path: Path) -> None:
    emulator = await em.Emulator("p").start()
    for i in range(7):
        emulator.put(em.service("ns", f"s{i}"))
    client = api.ApiClient(credentials.from_kubeconfig_text(
        emulator.kubeconfig_text(), origin="test", allow_insecure=True), page_size=3)
    try:
        first = await client.list(api.SERVICES)
        assert len(first.items) == 7 and first.pages == 3
        assert first.resource_version == str(emulator.rv)
        # Expiring the snapshot between pages makes the client start over.
        emulator.continue_ttl = 0
        second = await client.list(api.SERVICES)
        assert second.restarts == 1 and len(second.items) == 7
    finally:
        await client.close()
        await emulator.stop()


@pytest.mark.parametrize(("code", "error"), [
    (401, api.Unauthorized), (403, api.Forbidden), (500, api.ServerError),
    (503, api.ServerError), (429, api.ServerError), (410, api.Gone)])
async def test_error_statuses_become_our_exceptions(code: int, error: type) -> None:
    emulator = await em.Emulator("e").start()
    client = api.ApiClient(credentials.from_kubeconfig_text(
        emulator.kubeconfig_text(), origin="test", allow_insecure=True))
    try:
        emulator.fail(code)
        with pytest.raises(error) as raised:
            await client.list(api.ENDPOINTSLICES)
        assert raised.value.code == code
        emulator.fail(code, on="watch")
        got = await collect(client, str(emulator.rv))
        assert isinstance(got[-1], error)
    finally:
        await client.close()
        await emulator.stop()


async def test_connection_refused_drop_and_silence_are_connection_failures() -> None:
    emulator = await em.Emulator("d").start()
    client = api.ApiClient(credentials.from_kubeconfig_text(
        emulator.kubeconfig_text(), origin="test", allow_insecure=True))
    try:
        rv = str(emulator.rv)
        got: list[Any] = []
        task = asyncio.create_task(collect(client, rv, into=got))
        await eventually(lambda: emulator.open_watches == 1)
        emulator.put(em.service("ns", "a"))
        await eventually(lambda: got)
        emulator.drop_watches()
        got = await task
        assert got[0][0] == "ADDED" and isinstance(got[1], api.ConnectionFailed)
        # A silent stream (no event, no bookmark) is an IdleTimeout after idle_timeout.
        got = await collect(client, str(emulator.rv), idle=0.2)
        assert isinstance(got[-1], api.IdleTimeout)
        await emulator.stop()
        with pytest.raises(api.ConnectionFailed):
            await client.list(api.SERVICES)
    finally:
        await client.close()
        await emulator.stop()


async def test_a_compacted_resource_version_is_an_error_event_with_the_real_status(
        ) -> None:
    emulator = await em.Emulator("g").start()
    client = api.ApiClient(credentials.from_kubeconfig_text(
        emulator.kubeconfig_text(), origin="test", allow_insecure=True))
    try:
        old = str(emulator.rv)
        emulator.put(em.service("ns", "a"))
        emulator.compact()
        (gone,) = await collect(client, old)
        assert isinstance(gone, api.Gone)
        assert gone.status["kind"] == "Status" and gone.reason == "Expired"
        assert gone.message.startswith("too old resource version")
    finally:
        await client.close()
        await emulator.stop()



async def test_a_slow_server_is_waited_for_until_the_request_timeout() -> None:
    emulator = await em.Emulator("slow").start()
    emulator.put(em.service("ns", "a"))
    client = api.ApiClient(credentials.from_kubeconfig_text(
        emulator.kubeconfig_text(), origin="test", allow_insecure=True), request_timeout=0.3)
    try:
        emulator.latency = 0.1
        assert len((await client.list(api.SERVICES)).items) == 1
        emulator.latency = 0.6
        with pytest.raises(api.ConnectionFailed, match="Timeout"):
            await client.list(api.SERVICES)
    finally:
        await client.close()
        await emulator.stop()
