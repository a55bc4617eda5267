"""Credentials through the kubernetes package's loaders, used against the emulator."""

from __future__ import annotations

import base64
import datetime
import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from globaldns.sources.k8s import api, credentials
from globaldns.sources.k8s.credentials import CredentialsError
from tests.k8s import emulator as em


async def list_services(creds: credentials.Credentials) -> list[Any]:
    client = api.ApiClient(creds)
    try:
        return (await client.list(api.SERVICES)).items
    finally:
        await client.close()


async def test_a_kubeconfig_file_with_a_chosen_context(tmp_path: Path) -> None:
    emulator = await em.Emulator("one").start()
    emulator.put(em.service("ns", "a"))
    try:
        config = emulator.kubeconfig()
        # A second context pointing nowhere is the current one; we pick ours by name.
        config["clusters"].append({"name": "other", "cluster": {"server": "http://127.0.0.1:9"}})
        config["contexts"].append({"name": "other",
                                   "context": {"cluster": "other", "user": "one-user"}})
        config["current-context"] = "other"
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        creds = credentials.from_kubeconfig_file(str(path), context="one")
        assert creds.server == emulator.url
        assert creds.headers() == {"Authorization": "Bearer token-one"}
        assert len(await list_services(creds)) == 1
        with pytest.raises(CredentialsError, match="missing"):
            credentials.from_kubeconfig_file(str(path), context="missing")
    finally:
        await emulator.stop()


async def test_a_token_file_is_read(tmp_path: Path) -> None:
    emulator = await em.Emulator("tf").start()
    try:
        (tmp_path / "token").write_text("token-tf\n")
        path = emulator.write_kubeconfig(tmp_path / "kc",
                                         user={"tokenFile": str(tmp_path / "token")})
        creds = credentials.from_kubeconfig_file(path)
        assert creds.headers()["Authorization"] == "Bearer token-tf"
        assert await list_services(creds) == []
    finally:
        await emulator.stop()


async def test_an_exec_plugin_runs_again_when_its_token_expires(tmp_path: Path) -> None:
    emulator = await em.Emulator("ex", token="from-plugin").start()
    runs = tmp_path / "runs"
    plugin = tmp_path / "plugin.py"
    # Expiring within the loader's 5-minute skew: every use refreshes it.
    expiry = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)
              ).strftime("%Y-%m-%dT%H:%M:%SZ")
    plugin.write_text(f"""#!{sys.executable}
import json, pathlib
runs = pathlib.Path({str(runs)!r})
runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1beta1",
                  "kind": "ExecCredential",
                  "status": {{"token": "from-plugin", "expirationTimestamp": {expiry!r}}}}}))
""")
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    try:
        path = emulator.write_kubeconfig(tmp_path / "kc", user={"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(plugin),
            "interactiveMode": "Never"}})
        creds = credentials.from_kubeconfig_file(path)
        assert creds.refreshable
        first = runs.read_text()
        assert await list_services(creds) == []
        assert len(runs.read_text()) > len(first)  # the list refreshed the token
    finally:
        await emulator.stop()


async def test_in_cluster_service_account(tmp_path: Path) -> None:
    tls = em.TlsFiles.generate(tmp_path / "tls")
    emulator = await em.Emulator("pod", tls=tls).start()
    try:
        (tmp_path / "token").write_text("token-pod")
        creds = credentials.in_cluster(
            token_file=str(tmp_path / "token"), ca_file=tls.path("ca_pem"),
            environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1",
                     "KUBERNETES_SERVICE_PORT": str(emulator.port)})
        assert creds.server == emulator.url
        assert await list_services(creds) == []
        with pytest.raises(CredentialsError, match="in-cluster"):
            credentials.in_cluster(token_file=str(tmp_path / "token"),
                                   ca_file=tls.path("ca_pem"), environ={})
    finally:
        await emulator.stop()


async def test_https_with_ca_data_and_client_certificates(tmp_path: Path) -> None:
    tls = em.TlsFiles.generate(tmp_path / "tls")
    tls.client_ca = True
    emulator = await em.Emulator("tls", tls=tls).start()
    try:
        # Token over TLS, the CA given inline.
        assert await list_services(credentials.from_kubeconfig_text(
            emulator.kubeconfig_text(), origin="test")) == []
        # Client certificate instead of a token, inline data too (as remote Secrets carry).
        user = {"client-certificate-data": base64.b64encode(tls.client_cert_pem).decode(),
                "client-key-data": base64.b64encode(tls.client_key_pem).decode()}
        creds = credentials.from_kubeconfig_text(emulator.kubeconfig_text(user=user),
                                                 origin="test")
        assert creds.headers() == {}
        assert await list_services(creds) == []
        # Without the CA the server is not trusted.
        config = emulator.kubeconfig()
        del config["clusters"][0]["cluster"]["certificate-authority-data"]
        untrusted = credentials.from_kubeconfig_text(json.dumps(config), origin="test")
        with pytest.raises(api.ConnectionFailed, match="certificate"):
            await list_services(untrusted)
        config["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = True
        assert await list_services(credentials.from_kubeconfig_text(
            json.dumps(config), origin="test", allow_insecure=True)) == []
    finally:
        await emulator.stop()


@pytest.mark.parametrize(("text", "problem"), [
    ("{", "not YAML"),
    ("- a\n- b\n", "not a kubeconfig"),
    ("apiVersion: v1\nkind: Config\ncurrent-context: x\ncontexts: []\n", "x"),
    (yaml.safe_dump({"current-context": "c", "contexts": [{"name": "c", "context": {
        "cluster": "k", "user": "u"}}], "clusters": [{"name": "k", "cluster": {
            "server": "ftp://example"}}], "users": [{"name": "u", "user": {}}]}),
     "not an http"),
])
def test_unusable_kubeconfigs_name_where_they_came_from(text: str, problem: str) -> None:
    with pytest.raises(CredentialsError, match="secret ns/s") as raised:
        credentials.from_kubeconfig_text(text, origin="secret ns/s")
    assert problem in str(raised.value)


def test_a_missing_kubeconfig_file_is_a_credentials_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=str(tmp_path / "nope")):
        credentials.from_kubeconfig_file(str(tmp_path / "nope"))
