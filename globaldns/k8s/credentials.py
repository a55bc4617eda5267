"""Credentials for one cluster: the only module that imports the `kubernetes` package.

The package's own config loading reads kubeconfig files (tokens, token files, client
certificates, exec plugins, auth providers) and in-cluster service-account tokens; we
take what it loaded into a slim `Credentials`: a base URL, the Authorization header
(refreshed through the loader's own hook, for exec plugins and expiring tokens) and an
`ssl.SSLContext`. Loading runs plugins and reads files, so callers run it in a thread.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Mapping
from typing import Any

import yaml
from kubernetes.client import Configuration
from kubernetes.config import ConfigException, incluster_config, kube_config

SERVICE_TOKEN_FILE = incluster_config.SERVICE_TOKEN_FILENAME
SERVICE_CA_FILE = incluster_config.SERVICE_CERT_FILENAME


class CredentialsError(Exception):
    """A kubeconfig or in-cluster config that cannot be loaded."""


class Credentials:
    """How to reach and authenticate to one API server."""

    def __init__(self, configuration: Configuration, *, origin: str) -> None:
        self._conf = configuration
        self._lock = threading.Lock()
        self._ssl_key: tuple[Any, ...] | None = None
        self._ssl: ssl.SSLContext | None = None
        self.origin = origin
        """Where these came from (a file and context, `in-cluster`, a secret), for logs."""
        self.server: str = configuration.host.rstrip("/")

    def __repr__(self) -> str:
        return f"Credentials(server={self.server!r}, origin={self.origin!r})"

    @property
    def refreshable(self) -> bool:
        """True when the token comes from a plugin, a file or a provider and may change."""
        return self._conf.refresh_api_key_hook is not None

    def headers(self) -> dict[str, str]:
        """The Authorization header, refreshed first when it expired.

        May run an exec plugin or read a token file: call it in a thread.
        """
        with self._lock:
            # The loader's hook reloads the token when it is expired (and only then).
            value = self._conf.get_api_key_with_prefix("BearerToken")
        # Token files usually end with a newline; the loader keeps it, kubectl does not.
        value = (value or "").strip()
        return {"Authorization": value} if value else {}

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for https servers (None for http); rebuilt if files changed."""
        if not self.server.startswith("https:"):
            return None
        conf = self._conf
        key = (conf.ssl_ca_cert, conf.cert_file, conf.key_file, conf.verify_ssl,
               conf.tls_server_name)
        with self._lock:
            if self._ssl is None or key != self._ssl_key:
                self._ssl = _build_ssl(conf)
                self._ssl_key = key
            return self._ssl

    @property
    def tls_server_name(self) -> str | None:
        return self._conf.tls_server_name or None


def _build_ssl(conf: Configuration) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=conf.ssl_ca_cert or None)
        if not conf.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if conf.cert_file:
            context.load_cert_chain(conf.cert_file, conf.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise CredentialsError(f"TLS files of {conf.host}: {exc}") from exc
    return context


def _new_configuration() -> Configuration:
    # A fresh Configuration each time: the process-wide default is never set or read.
    return Configuration()


def from_kubeconfig_file(path: str, *, context: str = "") -> Credentials:
    """Load `path` (and `context`, default its current-context)."""
    conf = _new_configuration()
    try:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                                     config_file=os.path.expanduser(path),
                                     context=context or None, client_configuration=conf,
                                     persist_config=False)
    except (ConfigException, OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise CredentialsError(f"kubeconfig {path}"
                               f"{f' context {context}' if context else ''}: {exc}") from exc
    where = f"{path}" + (f" context {context}" if context else "")
    return _checked(conf, where)


def from_kubeconfig_text(text: str, *, origin: str, context: str = "") -> Credentials:
    """Load a kubeconfig given as text (the value of a remote Secret's data key)."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CredentialsError(f"kubeconfig from {origin}: not YAML: {exc}") from exc
    if not isinstance(loaded, Mapping):
        raise CredentialsError(f"kubeconfig from {origin}: not a kubeconfig mapping")
    conf = _new_configuration()
    try:
        kube_config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
                                               dict(loaded), context=context or None,
                                               client_configuration=conf,
                                               persist_config=False)
    except (ConfigException, OSError, KeyError, TypeError) as exc:
        raise CredentialsError(f"kubeconfig from {origin}: {exc}") from exc
    return _checked(conf, origin)


def in_cluster(*, token_file: str = SERVICE_TOKEN_FILE, ca_file: str = SERVICE_CA_FILE,
               environ: Mapping[str, str] | None = None) -> Credentials:
    """The pod's service account: KUBERNETES_SERVICE_HOST/PORT, its token (re-read every
    minute, for bound tokens that rotate) and CA. The paths are the standard mounts."""
    conf = _new_configuration()
    try:
        loader = incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
            token_filename=token_file, cert_filename=ca_file,
            environ=os.environ if environ is None else environ)
        loader.load_and_set(conf)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as exc:
        raise CredentialsError(f"in-cluster config: {exc}") from exc
    return _checked(conf, "in-cluster")


def _checked(conf: Configuration, origin: str) -> Credentials:
    host = conf.host or ""
    if not host.startswith(("http://", "https://")):
        raise CredentialsError(f"{origin}: server {host!r} is not an http(s) URL")
    credentials = Credentials(conf, origin=origin)
    credentials.ssl_context()  # fail now, with the file names, not at first connect
    return credentials
