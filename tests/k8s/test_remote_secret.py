"""`globaldns create-remote-secret`: step 1's manifests and step 2's Secret validate
strictly against the Kubernetes schemas (kubernetes-validate, offline), the ClusterRole
grants list/watch of exactly what globaldns reads, and step 2 reads the token through the
API of an emulated cluster over https and makes a Secret our own remote-secret filter
accepts, whose kubeconfig then watches that cluster."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from globaldns.cli import main
from globaldns.registry.model import Locality
from globaldns.sources.k8s import api, credentials, objects
from globaldns.sources.k8s.mcs import SERVICEEXPORTS
from tests.helpers.deploy import VERSIONS
from tests.k8s import emulator as em

SA_TOKEN = "reader-token-0123456789"


def validated(text: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    return docs


def run(capsys: Any, *args: str) -> tuple[int, str, str]:
    code = main(["create-remote-secret", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def read_rules(docs: list[dict[str, Any]]) -> list[tuple[str, tuple[str, ...]]]:
    [role] = [d for d in docs if d["kind"] == "ClusterRole"]
    assert {tuple(r["verbs"]) for r in role["rules"]} == {("list", "watch")}
    return sorted((g, tuple(r["resources"])) for r in role["rules"] for g in r["apiGroups"])


@pytest.mark.parametrize(("flags", "extra"), [
    ((), []),
    (("--service-exports",), [("multicluster.x-k8s.io", ("serviceexports",))]),
    (("--istio",), [("networking.istio.io",
                     ("serviceentries", "workloadentries", "workloadgroups"))]),
])
def test_step_one_prints_a_reader_that_lists_and_watches_only_what_globaldns_reads(
        capsys: Any, tmp_path: Path, flags: tuple[str, ...],
        extra: list[tuple[str, tuple[str, ...]]]) -> None:
    code, out, err = run(capsys, "--kubeconfig", str(tmp_path / "unused"), "--name", "east",
                         *flags)
    assert code == 0, err
    docs = validated(out)
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "ClusterRole",
                                         "ClusterRoleBinding", "Secret"]
    assert read_rules(docs) == sorted([("", ("services",)),
                                       ("discovery.k8s.io", ("endpointslices",)), *extra])
    binding = docs[3]
    assert binding["roleRef"]["name"] == docs[2]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": docs[1]["metadata"]["name"],
                                    "namespace": "globaldns"}]
    assert docs[4]["type"] == "kubernetes.io/service-account-token"
    assert docs[4]["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": docs[1]["metadata"]["name"]}
    assert "--token-from-cluster" in err


def test_the_rules_name_exactly_the_resources_the_sources_read() -> None:
    from globaldns.sources.k8s import istio
    from globaldns.tools.remote_secret import BASE_RULES, ISTIO_RULE, SERVICE_EXPORT_RULE
    read = {(r["apiGroups"][0], plural) for r in (*BASE_RULES, SERVICE_EXPORT_RULE, ISTIO_RULE)
            for plural in r["resources"]}
    assert read == {("discovery.k8s.io", api.ENDPOINTSLICES.plural),
                    ("", api.SERVICES.plural),
                    ("multicluster.x-k8s.io", SERVICEEXPORTS.plural),
                    *(("networking.istio.io", p) for p in istio.PLURALS)}
    assert SERVICEEXPORTS.prefix == "/apis/multicluster.x-k8s.io/v1alpha1"


async def test_step_two_reads_the_token_over_https_and_prints_a_secret_our_filter_accepts(
        capsys: Any, tmp_path: Path) -> None:
    tls = em.TlsFiles.generate(tmp_path / "tls")
    remote = await em.Emulator("east", tls=tls, token=SA_TOKEN).start()
    try:
        remote.put(em.service("prod", "web"))
        # What the token controller writes into step 1's Secret.
        [token_secret] = [d for d in yaml.safe_load_all(
            (await asyncio.to_thread(run, capsys, "--kubeconfig", "x", "--name", "east"))[1])
            if d["kind"] == "Secret"]
        token_secret["data"] = {"token": base64.b64encode(SA_TOKEN.encode()).decode(),
                                "ca.crt": base64.b64encode(tls.ca_pem).decode()}
        remote.put(token_secret)
        remote.put(em.secret("globaldns", "unrelated", {"password": "hunter2"}))
        kubeconfig = remote.write_kubeconfig(tmp_path / "admin.kubeconfig")
        code, out, err = await asyncio.to_thread(
            run, capsys, "--kubeconfig", kubeconfig, "--name", "east", "--locality",
            "us-east1", "--token-from-cluster")
        assert code == 0, err
        assert SA_TOKEN not in err
        [secret] = validated(out)
        assert secret["metadata"]["namespace"] == "globaldns-remotes"
        assert secret["metadata"]["labels"] == {"istio/multiCluster": "true"}
        # It read one namespace's Secrets, narrowed to the token's label.
        [(path, query)] = [(p, q) for p, q in remote.requests if "secrets" in p]
        assert path == "/api/v1/namespaces/globaldns/secrets"
        assert query["labelSelector"] == "globaldns.io/remote-reader=true"
        # Our own filter: the remote Secret's reader, then the kubeconfig's judge.
        [cluster] = objects.remote_secret(secret)
        assert (cluster.name, cluster.locality) == ("east", Locality("us-east1"))
        loaded = yaml.safe_load(cluster.kubeconfig)
        assert set(loaded["clusters"][0]["cluster"]) == {"server",
                                                         "certificate-authority-data"}
        assert set(loaded["users"][0]["user"]) == {"token"}
        creds = credentials.from_kubeconfig_text(cluster.kubeconfig, origin="test")
        assert creds.server == remote.url and creds.server.startswith("https://")
        client = api.ApiClient(creds)
        try:
            listed = await client.list(api.SERVICES)
        finally:
            await client.close()
        assert [s["metadata"]["name"] for s in listed.items] == ["web"]
    finally:
        await remote.stop()


async def test_step_two_refuses_an_http_server_and_a_missing_token(
        capsys: Any, tmp_path: Path) -> None:
    remote = await em.Emulator("plain").start()
    try:
        kubeconfig = remote.write_kubeconfig(tmp_path / "k")
        code, _, err = await asyncio.to_thread(run, capsys, "--kubeconfig", kubeconfig,
                                               "--name", "plain", "--token-from-cluster")
        assert code == 1 and "is not https://" in err
        code, _, err = await asyncio.to_thread(
            run, capsys, "--kubeconfig", kubeconfig, "--name", "plain",
            "--token-from-cluster", "--server", "https://127.0.0.1:1")
        # --server only names what goes into the Secret; the token is read at the
        # kubeconfig's server, where there is none yet.
        assert code == 1 and "apply step 1 first" in err
    finally:
        await remote.stop()


@pytest.mark.parametrize(("args", "problem"), [
    (("--name", "Not_A Label"), "is not a DNS label"),
    (("--name", "east", "--reader-namespace", "Bad!"), "--reader-namespace is not"),
    (("--name", "east", "--locality", "a//b"), "--locality"),
])
def test_bad_arguments_are_refused(capsys: Any, args: tuple[str, ...], problem: str) -> None:
    code, out, err = run(capsys, "--kubeconfig", "x", *args)
    assert code == 1 and out == "" and problem in err
