"""Hostile remote Secrets and API servers: nothing runs, nothing local is read or sent,
and no token or key reaches a log line, a page or a metric.

Whoever may write a Secret in the remote-secrets namespace chooses the kubeconfig we
load; whoever runs an API server chooses its answers (a redirect, a 401, an echo).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from globaldns.config.model import ClusterConfig, Config, RemoteSecretsConfig
from globaldns.registry.store import Store
from globaldns.sources.k8s import api, credentials
from globaldns.sources.k8s.credentials import CredentialsError
from globaldns.sources.k8s.fleet import KubernetesSources
from tests.helpers.http import get
from tests.helpers.k8s import FastTime, cluster_config, serve, timing_for
from tests.helpers.wait import eventually
from tests.k8s import emulator as em

LABEL = {"istio/multiCluster": "true"}

StartSources = Callable[[Config], Awaitable[KubernetesSources]]


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
async def start_sources(fast: FastTime, store: Store) -> AsyncIterator[StartSources]:
    started: list[KubernetesSources] = []

    async def start(config: Config) -> KubernetesSources:
        sources = KubernetesSources(config, store, timing=fast.timing)
        started.append(sources)
        await sources.start()
        return sources

    yield start
    for sources in started:
        await sources.stop()


def status_of(sources: KubernetesSources, name: str) -> dict[str, Any]:
    return next(s for s in sources.status() if s["cluster"] == name)


def state_is(sources: KubernetesSources, name: str, *states: str) -> Callable[[], bool]:
    """The cluster exists and is in one of `states`."""
    return lambda: any(s["cluster"] == name and s["state"] in states
                       for s in sources.status())


def settled(sources: KubernetesSources, name: str) -> Callable[[], bool]:
    """The cluster exists and is past `syncing` (synced, or failed)."""
    return state_is(sources, name, "synced", "stale", "failed")


def leaks(secret: str, text: str) -> bool:
    """Any 8 characters of `secret` in `text` (PyYAML quotes the tail of a long line)."""
    return any(secret[i:i + 8] in text for i in range(len(secret) - 7))


def exec_plugin(directory: Path, sentinel: Path, token: str) -> Path:
    """A client-go exec plugin that leaves `sentinel` behind and prints a good token."""
    plugin = directory / "plugin.py"
    plugin.write_text(f"""#!{sys.executable}
import json, pathlib
pathlib.Path({str(sentinel)!r}).write_text("ran")
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1beta1",
                  "kind": "ExecCredential", "status": {{"token": {token!r}}}}}))
""")
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    return plugin


def exec_user(plugin: Path) -> dict[str, Any]:
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                     "command": str(plugin), "interactiveMode": "Never"}}


def hub_config(hub: em.Emulator, directory: Path, **remote: Any) -> Config:
    return Config(clusters=(cluster_config(hub, directory),),
                  remote_secrets=RemoteSecretsConfig(cluster="hub", **remote))


def put_secret(hub: em.Emulator, **kubeconfigs: str) -> None:
    hub.put(em.secret("istio-system", "remote", kubeconfigs, labels=LABEL))


# --- Remote secrets run code ------------------------------------------------------------


async def test_an_exec_plugin_in_a_remote_secret_never_runs(
        emulators: Any, start_sources: StartSources, tmp_path: Path) -> None:
    tls = em.TlsFiles.generate(tmp_path / "tls")
    (hub,) = await emulators("hub")
    (east,) = await emulators("east", tls=tls)
    sentinel = tmp_path / "exec-plugin-ran"
    plugin = exec_plugin(tmp_path, sentinel, east.token)
    put_secret(hub, east=east.kubeconfig_text(user=exec_user(plugin)))
    sources = await start_sources(hub_config(hub, tmp_path))
    await eventually(settled(sources, "east"), what="east loaded or refused")
    assert not sentinel.exists()
    east_status = status_of(sources, "east")
    assert east_status["state"] == "failed"
    assert "rejected (exec)" in east_status["last_error"]
    assert sources.discovery_status()["rejected"]["exec"] == 1  # type: ignore[index]
    assert east.requests == []


async def test_a_token_file_in_a_remote_secret_is_never_read_nor_sent(
        emulators: Any, start_sources: StartSources, tmp_path: Path) -> None:
    tls = em.TlsFiles.generate(tmp_path / "tls")
    (hub,) = await emulators("hub")
    (east,) = await emulators("east", tls=tls)
    # In a pod this would be /var/run/secrets/kubernetes.io/serviceaccount/token.
    stolen = tmp_path / "service-account-token"
    stolen.write_text("sa-token-of-the-globaldns-pod")
    put_secret(hub, east=east.kubeconfig_text(user={"tokenFile": str(stolen)}))
    sources = await start_sources(hub_config(hub, tmp_path))
    await eventually(settled(sources, "east"), what="east loaded or refused")
    assert not any("sa-token-of-the-globaldns-pod" in a for a in east.authorizations)
    assert east.requests == []
    assert "rejected (token_file)" in status_of(sources, "east")["last_error"]
    assert sources.discovery_status()["rejected"]["token_file"] == 1  # type: ignore[index]


async def test_an_http_server_in_a_remote_secret_gets_nothing_unless_allowed(
        emulators: Any, start_sources: StartSources, store: Store, tmp_path: Path) -> None:
    hub, east = await emulators("hub", "east")
    east.put(em.service("prod", "web"))
    put_secret(hub, east=east.kubeconfig_text())
    sources = await start_sources(hub_config(hub, tmp_path))
    await eventually(settled(sources, "east"), what="east loaded or refused")
    assert east.requests == []
    assert "rejected (http_server)" in status_of(sources, "east")["last_error"]
    # The operator opts in: the same Secret is judged again, and east syncs.
    await sources.apply(hub_config(hub, tmp_path, allow_insecure=True))
    await eventually(state_is(sources, "east", "synced"))
    assert set(east.authorizations) == {f"Bearer {east.token}"}
    assert store.keys_of("k8s/east") == (("prod", "web"),)
    # And out again: refused, and what it served is dropped.
    await sources.apply(hub_config(hub, tmp_path))
    await eventually(state_is(sources, "east", "failed"))
    assert store.keys_of("k8s/east") == ()
    assert sources.discovery_status()["rejected"]["http_server"] == 2  # type: ignore[index]


async def test_a_fixed_secret_replaces_a_rejected_one(
        emulators: Any, start_sources: StartSources, tmp_path: Path) -> None:
    tls = em.TlsFiles.generate(tmp_path / "tls")
    (hub,) = await emulators("hub")
    (east,) = await emulators("east", tls=tls)
    east.put(em.service("prod", "web"))
    put_secret(hub, east=east.kubeconfig_text(user={"tokenFile": "/etc/hostname"}))
    sources = await start_sources(hub_config(hub, tmp_path))
    await eventually(state_is(sources, "east", "failed"))
    put_secret(hub, east=east.kubeconfig_text())
    await eventually(state_is(sources, "east", "synced"))
    assert status_of(sources, "east")["services"] == 1


async def test_the_operators_own_kubeconfig_file_keeps_exec_plugins(
        emulators: Any, start_sources: StartSources, tmp_path: Path) -> None:
    tls = em.TlsFiles.generate(tmp_path / "tls")
    (hub,) = await emulators("hub")
    east, west = await emulators("east", "west", tls=tls)
    ran_east = tmp_path / "ran-east"
    (tmp_path / "east").mkdir()
    east_file = east.write_kubeconfig(tmp_path / "east.kubeconfig", user=exec_user(
        exec_plugin(tmp_path / "east", ran_east, east.token)))
    ran_west = tmp_path / "ran-west"
    (tmp_path / "west").mkdir()
    put_secret(hub, west=west.kubeconfig_text(user=exec_user(
        exec_plugin(tmp_path / "west", ran_west, west.token))))
    config = hub_config(hub, tmp_path)
    config = Config(clusters=(*config.clusters, ClusterConfig(name="east",
                                                              kubeconfig=east_file)),
                    remote_secrets=config.remote_secrets)
    sources = await start_sources(config)
    await eventually(state_is(sources, "east", "synced"))
    await eventually(settled(sources, "west"), what="west loaded or refused")
    assert ran_east.exists() and not ran_west.exists()
    assert status_of(sources, "west")["state"] == "failed"


def _kubeconfig(*, server: str = "https://127.0.0.1:6443", cluster: dict[str, Any] | None = None,
                user: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "c",
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "clusters": [{"name": "k", "cluster": {"server": server, **(cluster or {})}}],
            "users": [{"name": "u", "user": user if user is not None else {"token": "t0k3n"}}]}


KEY = base64.b64encode(b"-----BEGIN PRIVATE KEY-----\nsecret key bytes\n").decode()


@pytest.mark.parametrize(("kubeconfig", "reason"), [
    (_kubeconfig(user={"exec": {"command": "id", "apiVersion": "v1"}}), "exec"),
    (_kubeconfig(user={"auth-provider": {"name": "gcp", "config": {"cmd-path": "id"}}}),
     "auth_provider"),
    (_kubeconfig(user={"tokenFile": "/etc/hostname"}), "token_file"),
    # The case: a token file sent to a plain-http server.
    (_kubeconfig(server="http://127.0.0.1:1", user={"tokenFile": "/etc/hostname"}),
     "token_file"),
    (_kubeconfig(user={"client-certificate": "/etc/c.pem", "client-key": "/etc/k.pem"}),
     "file_path"),
    (_kubeconfig(user={"client-certificate-data": KEY, "client-key": "/etc/k.pem"}),
     "file_path"),
    (_kubeconfig(cluster={"certificate-authority": "/etc/hostname"}), "file_path"),
    (_kubeconfig(server="http://127.0.0.1:1"), "http_server"),
    (_kubeconfig(cluster={"insecure-skip-tls-verify": True}), "insecure_skip_tls_verify"),
    (_kubeconfig(user={"username": "u", "password": "p"}), "unsupported_field"),
    (_kubeconfig(user={"token": "t0k3n", "as": "system:admin"}), "unsupported_field"),
    (_kubeconfig(cluster={"proxy-url": "http://127.0.0.1:3128"}), "unsupported_field"),
    (_kubeconfig(server="ftp://127.0.0.1"), "malformed"),
    (_kubeconfig(server="https://user:pw@127.0.0.1"), "malformed"),
    (_kubeconfig(user={"token": "t0k3n\r\nX-Injected: 1"}), "malformed"),
    (_kubeconfig(server="https://127.0.0.1\n:6443"), "malformed"),
    (_kubeconfig(cluster={"tls-server-name": "a b"}), "malformed"),
    (_kubeconfig(user={"client-certificate-data": KEY, "client-key-data": "not base64!"}),
     "malformed"),
    (_kubeconfig(user={"client-key-data": KEY}), "malformed"),
    ({**_kubeconfig(), "current-context": "elsewhere"}, "malformed"),
    (["a", "list"], "malformed"),
    ("{", "not_yaml"),
    ("[" * 400, "not_yaml"),
    ("[" * 100_000, "too_large"),
    ("- x\n" * 600, "too_large"),
    ("a: " + "x" * (65 * 1024), "too_large"),
])
def test_a_remote_secret_kubeconfig_is_refused_with_its_reason(
        kubeconfig: Any, reason: str, tmp_path: Path) -> None:
    text = kubeconfig if isinstance(kubeconfig, str) else yaml.safe_dump(kubeconfig)
    with pytest.raises(CredentialsError) as raised:
        credentials.from_kubeconfig_text(text, origin="secret ns/s key c")
    message = str(raised.value)
    assert f"secret ns/s key c rejected ({reason})" in message
    assert getattr(raised.value, "reason", None) == reason
    assert not leaks(KEY, message)
    for secret in ("t0k3n", "secret key bytes", "/etc/hostname", "pw@", "\n"):
        assert secret not in message


def test_allow_insecure_accepts_http_and_unverified_servers() -> None:
    for kubeconfig in (_kubeconfig(server="http://127.0.0.1:1"),
                       _kubeconfig(cluster={"insecure-skip-tls-verify": True})):
        creds = credentials.from_kubeconfig_text(yaml.safe_dump(kubeconfig), origin="t",
                                                 allow_insecure=True)
        assert creds.headers() == {"Authorization": "Bearer t0k3n"}


def test_yaml_errors_quote_no_line_of_a_kubeconfig(tmp_path: Path) -> None:
    text = f"users:\n- name: u\n  user:\n    client-key-data: {KEY}: broken\n"
    for load in (lambda: credentials.from_kubeconfig_text(text, origin="secret ns/s"),
                 lambda: credentials.from_kubeconfig_file(str(tmp_path / "kc"))):
        (tmp_path / "kc").write_text(text)
        with pytest.raises(CredentialsError) as raised:
            load()
        assert "line 4" in str(raised.value)
        assert not leaks(KEY, str(raised.value))
        assert "client-key-data" not in str(raised.value)


# --- Secrets in logs ----------------------------------------------------------------------


def client_of(server: str, directory: Path, *, token: str = "t0k3n",
              **kw: Any) -> api.ApiClient:
    """A client of `server` with credentials from a kubeconfig file (as configured)."""
    path = directory / "client.kubeconfig"
    path.write_text(yaml.safe_dump(_kubeconfig(server=server, user={"token": token})))
    return api.ApiClient(credentials.from_kubeconfig_file(str(path)), **kw)


async def test_a_redirect_is_an_error_and_is_never_followed(
        emulators: Any, tmp_path: Path) -> None:
    a, b = await emulators("a", "b")
    a.redirect = b.url + "/api/v1/services"
    client = client_of(a.url, tmp_path, token=a.token)
    try:
        with pytest.raises(api.ApiError) as raised:
            await client.list(api.SERVICES)
        assert raised.value.code == 302
        with pytest.raises(api.ApiError, match="302"):
            async with client.watch(api.SERVICES, resource_version="1", idle_timeout=2):
                pass
    finally:
        await client.close()
    assert b.requests == []
    assert "Bearer" not in str(raised.value) and a.token not in str(raised.value)


async def test_an_api_server_echoing_the_token_is_not_repeated(tmp_path: Path) -> None:
    token = "tok-echo-5e6f7a8b9c0d"

    async def echo(request: web.Request) -> web.StreamResponse:
        said = request.headers.get("Authorization", "")
        if not request.query.get("watch"):
            return web.Response(text=f"<html>proxy error; you sent {said}</html>", status=502)
        response = web.StreamResponse()
        await response.prepare(request)
        error = em.status(500, "InternalError", f"you sent {said}")
        await response.write(json.dumps({"type": "ERROR", "object": error}).encode() + b"\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/api/v1/services", echo)
    runner, url = await serve(app)
    client = client_of(url, tmp_path, token=token)
    try:
        with pytest.raises(api.ApiError) as listed:
            await client.list(api.SERVICES)
        with pytest.raises(api.ApiError) as watched:
            async with client.watch(api.SERVICES, resource_version="1",
                                    idle_timeout=2) as events:
                async for _ in events:
                    pass
    finally:
        await client.close()
        await runner.cleanup()
    assert listed.value.code == 502 and watched.value.code == 500
    for raised in (listed, watched):
        assert token not in str(raised.value), str(raised.value)


async def test_error_bodies_are_read_whole_but_bounded_in_time(tmp_path: Path) -> None:
    forbidden = json.dumps(em.fault_status(403, "services")).encode()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=403)
        response.enable_chunked_encoding()
        await response.prepare(request)
        if request.query.get("watch"):
            await response.write(forbidden[:10])  # and never the rest
            await asyncio.Event().wait()
        for i in range(0, len(forbidden), 7):  # a Status in pieces
            await response.write(forbidden[i:i + 7])
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/api/v1/services", handler)
    runner, url = await serve(app)
    client = client_of(url, tmp_path, request_timeout=0.3)
    try:
        with pytest.raises(api.Forbidden, match="cannot list resource"):
            await client.list(api.SERVICES)
        async with asyncio.timeout(10):  # a guard: the old client waited for ever
            with pytest.raises(api.Forbidden):
                async with client.watch(api.SERVICES, resource_version="1", idle_timeout=2):
                    pass
    finally:
        await client.close()
        await runner.cleanup()


async def test_no_token_or_key_byte_reaches_logs_pages_or_metrics(
        emulators: Any, server_factory: Any, tmp_path: Path, fast: FastTime,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    loop, denied, hub = await emulators("loop", "denied", "hub",
                                        token="tok-hub-7c1d0e9a5b3f")
    loop.token = "tok-loop-4f2a9b8c6d1e"
    loop.redirect = ""  # every request: 302 to itself
    denied_token = "tok-denied-8e7d6c5b4a39"  # the server expects another one
    key = base64.b64encode(b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIKEYBYTES\n").decode()
    put_secret(hub, bad=f"users:\n- name: u\n  user:\n    client-key-data: {key}: x\n",
               worse=yaml.safe_dump(_kubeconfig(user={"token": "tok-worse-0a1b2c3d4e5f",
                                                      "tokenFile": "/etc/hostname"})))
    lines = ["zones: [{name: global}]", "sync_timeout: 1s", "clusters:"]
    for e, token in ((loop, loop.token), (denied, denied_token), (hub, hub.token)):
        path = e.write_kubeconfig(tmp_path / f"{e.name}.kubeconfig", token=token)
        lines += [f"  - name: {e.name}", f"    kubeconfig: {path}"]
    lines.append("remote_secrets: {cluster: hub}")
    server = server_factory("\n".join(lines) + "\n", k8s_timing=timing_for(fast))
    sources = server.app.runtime.kubernetes
    await eventually(lambda: {s["cluster"]: s["errors"] > 0 for s in sources.status()}
                     == {"loop": True, "denied": True, "bad": True, "worse": True,
                         "hub": False}, timeout=10, what="every hostile cluster failed")
    assert "302" in status_of(sources, "loop")["last_error"]
    pages = [await asyncio.to_thread(get, server, path) for path in
             ("/", "/debug/registry", "/debug/registry?limit=0", "/metrics", "/ready",
              "/health", "/debug/explain?name=web.prod.global")]
    seen = "\n".join([caplog.text, *(body for _, _, body in pages),
                      json.dumps(sources.status()), json.dumps(sources.discovery_status())])
    # Each refusal is on the status page (state and last error) and counted by reason.
    page, metrics = pages[0][2], pages[3][2]
    assert "rejected (token_file)" in page and "rejected (not_yaml)" in page
    assert 'globaldns_k8s_remote_secret_rejected_total{reason="token_file"} 1.0' in metrics
    assert 'globaldns_k8s_remote_secret_rejected_total{reason="not_yaml"} 1.0' in metrics
    assert 'globaldns_k8s_remote_secret_rejected_total{reason="exec"} 0.0' in metrics
    for secret in (loop.token, denied_token, hub.token, "tok-worse-0a1b2c3d4e5f", key):
        assert not leaks(secret, seen), secret
    assert "Authorization" not in seen and "Bearer" not in seen
    assert loop.authorizations and len(loop.requests) < 50  # no redirect was followed
