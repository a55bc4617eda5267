"""`globaldns create-remote-secret`: a least-privilege remote Secret, in two steps.

Step 1 (no `--token-from-cluster`) prints what the remote cluster needs, for
`kubectl --context REMOTE apply -f -`: a ServiceAccount, a ClusterRole that may only list
and watch what globaldns reads there (EndpointSlices and Services; ServiceExports with
`--service-exports`; ServiceEntries, WorkloadEntries and WorkloadGroups with `--istio`),
its binding, and a token Secret the token controller fills.

Step 2 (`--token-from-cluster`) reads that token Secret through the API with the same
kubeconfig (one list of one namespace, narrowed by a label to that Secret), and prints
the Secret for the primary cluster in Istio's remote-secret format (label
`istio/multiCluster: "true"`, data key = the cluster's name), for
`kubectl --context PRIMARY apply -f -`. Its kubeconfig holds only an https server, a CA
and the token: what `sources/k8s/credentials.py` accepts from a remote Secret.

Istio's own reader may read every Secret of the remote cluster; this one reads nothing
it does not need. The token goes to standard output only, never to a log line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from typing import Any

import yaml

from globaldns.registry.model import Locality, is_cluster_name, is_label
from globaldns.sources.k8s import istio, mcs
from globaldns.sources.k8s.api import SECRETS, ApiClient, ApiError, describe
from globaldns.sources.k8s.credentials import Credentials, CredentialsError, from_kubeconfig_file

READER = "globaldns-remote-reader"
"""The name of the ServiceAccount, ClusterRole, binding and token Secret (with -token)."""
TOKEN_LABEL = "globaldns.io/remote-reader"
"""On the token Secret: step 2 lists the Secrets of the namespace with this label only."""
MULTICLUSTER_LABEL = "istio/multiCluster"
LOCALITY_ANNOTATION = "globaldns.io/locality"
ISTIO_CLUSTER_ANNOTATION = "networking.istio.io/cluster"

# What globaldns reads in a watched cluster (sources/k8s/cluster.py), by flag.
BASE_RULES = [
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
     "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch"]},
]
SERVICE_EXPORT_RULE = {"apiGroups": [mcs.GROUP], "resources": [mcs.SERVICEEXPORTS.plural],
                       "verbs": ["list", "watch"]}
ISTIO_RULE = {"apiGroups": [istio.GROUP], "resources": list(istio.PLURALS),
              "verbs": ["list", "watch"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", required=True,
                        help="a kubeconfig that reaches the remote cluster (an admin's)")
    parser.add_argument("--context", default="", help="its context (default: current)")
    parser.add_argument("--name", required=True,
                        help="the remote cluster's name in globaldns (one DNS label)")
    parser.add_argument("--reader-namespace", default="globaldns",
                        help="where the reader's ServiceAccount lives in the remote cluster")
    parser.add_argument("--secret-namespace", default="globaldns-remotes",
                        help="where the primary's globaldns reads remote Secrets "
                             "(remote_secrets.namespace)")
    parser.add_argument("--locality", default="",
                        help="region[/zone] of the remote cluster (an annotation)")
    parser.add_argument("--server", default="",
                        help="the API server URL the primary's pods reach (default: the "
                             "kubeconfig's)")
    parser.add_argument("--service-exports", action="store_true",
                        help="also list/watch ServiceExports (export: service_export)")
    parser.add_argument("--istio", action="store_true",
                        help="also list/watch ServiceEntries, WorkloadEntries and "
                             "WorkloadGroups (istio: true)")
    parser.add_argument("--token-from-cluster", action="store_true",
                        help="step 2: read the reader's token through the API and print "
                             "the primary's Secret")


class RemoteSecretError(Exception):
    """Why no Secret can be made (printed, the command fails)."""


def rules(*, service_exports: bool, istio: bool) -> list[dict[str, Any]]:
    return [*BASE_RULES, *([SERVICE_EXPORT_RULE] if service_exports else []),
            *([ISTIO_RULE] if istio else [])]


def remote_manifests(*, namespace: str, service_exports: bool, istio: bool
                     ) -> list[dict[str, Any]]:
    """Step 1: the reader identity in the remote cluster."""
    subject = {"kind": "ServiceAccount", "name": READER, "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": READER, "namespace": namespace},
         "automountServiceAccountToken": False},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": READER},
         "rules": rules(service_exports=service_exports, istio=istio)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": READER},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": READER},
         "subjects": [subject]},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
         "metadata": {"name": f"{READER}-token", "namespace": namespace,
                      "labels": {TOKEN_LABEL: "true"},
                      "annotations": {"kubernetes.io/service-account.name": READER}}},
    ]


def kubeconfig(*, name: str, server: str, ca_pem: bytes, token: str) -> str:
    """A kubeconfig of only an https server, its CA and a token."""
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": name, "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": READER, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": READER}}],
        "current-context": name,
    }, sort_keys=False)


def primary_secret(*, name: str, namespace: str, locality: str, text: str) -> dict[str, Any]:
    """Step 2: Istio's remote-secret format, for the primary cluster."""
    annotations = {ISTIO_CLUSTER_ANNOTATION: name}
    if locality:
        annotations[LOCALITY_ANNOTATION] = locality
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": f"globaldns-remote-{name}", "namespace": namespace,
                         "labels": {MULTICLUSTER_LABEL: "true"},
                         "annotations": annotations},
            "data": {name: base64.b64encode(text.encode()).decode()}}


def _decoded(data: dict[str, Any], key: str) -> bytes:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise RemoteSecretError(f"the token Secret has no {key} yet (is the token "
                                "controller running? apply step 1 first)")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise RemoteSecretError(f"the token Secret's {key} is not base64") from exc


async def read_token(credentials: Credentials, namespace: str) -> tuple[str, bytes]:
    """The reader's token and the cluster's CA (`ca.crt`) from its token Secret."""
    api = ApiClient(credentials, page_size=10)
    try:
        listed = await api.list(SECRETS, namespace=namespace,
                                label_selector=f"{TOKEN_LABEL}=true")
    except ApiError as exc:
        raise RemoteSecretError(f"listing Secrets in {namespace}: {describe(exc)}") from exc
    finally:
        await api.close()
    found = [s for s in listed.items
             if (s.get("metadata") or {}).get("name") == f"{READER}-token"]
    if not found:
        raise RemoteSecretError(f"no Secret {namespace}/{READER}-token: apply step 1 first")
    data = found[0].get("data") or {}
    token = _decoded(data, "token").decode("ascii", "replace")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise RemoteSecretError("the token is not one word of printable ASCII")
    return token, _decoded(data, "ca.crt")


def run(args: argparse.Namespace) -> str:
    """The YAML to print; RemoteSecretError when it cannot be made."""
    if not is_cluster_name(args.name):
        raise RemoteSecretError(f"--name {args.name!r} is not a DNS label")
    for flag in ("reader_namespace", "secret_namespace"):
        if not is_label(getattr(args, flag)):
            raise RemoteSecretError(f"--{flag.replace('_', '-')} is not a namespace name")
    try:
        Locality.parse(args.locality)
    except ValueError as exc:
        raise RemoteSecretError(f"--locality: {exc}") from exc
    if not args.token_from_cluster:
        docs = remote_manifests(namespace=args.reader_namespace,
                                service_exports=args.service_exports, istio=args.istio)
        return yaml.safe_dump_all(docs, sort_keys=False)
    try:
        credentials = from_kubeconfig_file(args.kubeconfig, context=args.context)
    except CredentialsError as exc:
        raise RemoteSecretError(str(exc)) from exc
    server = args.server or credentials.server
    if not server.startswith("https://"):
        raise RemoteSecretError(f"the server {server} is not https://: a remote Secret "
                                "holds an https server only (give --server)")
    token, ca = asyncio.run(read_token(credentials, args.reader_namespace))
    text = kubeconfig(name=args.name, server=server, ca_pem=ca, token=token)
    return yaml.safe_dump(primary_secret(name=args.name, namespace=args.secret_namespace,
                                         locality=args.locality, text=text),
                          sort_keys=False)


def main(args: argparse.Namespace) -> int:
    try:
        out = run(args)
    except RemoteSecretError as exc:
        print(f"globaldns create-remote-secret: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(out)
    if not args.token_from_cluster:
        print(f"# apply to cluster {args.name}, then run again with --token-from-cluster "
              "for the primary's Secret", file=sys.stderr)
    return 0
