"""Credentials for one cluster: the only module that imports the `kubernetes` package.

It imports it lazily, in the functions that load credentials: the package costs about
30 MB and 0.2 s of start-up, which a server without watched clusters never pays.

The package's own config loading reads kubeconfig files (tokens, token files, client
certificates, exec plugins, auth providers) and in-cluster service-account tokens; we
take what it loaded into a slim `Credentials`: a base URL, the Authorization header
(refreshed through the loader's own hook, for exec plugins and expiring tokens) and an
`ssl.SSLContext`. Loading runs plugins and reads files, so callers run it in a thread.

That full format is for the operator's own files only. A kubeconfig from a remote Secret
is written by whoever may write Secrets in one namespace of one cluster: it is bounded,
parsed with the safe loader, and judged field by field before the package sees anything
(`from_kubeconfig_text`): inline data and an https server only, never a program to run
or a local file to read (whose content, in a pod, is the service-account token).
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
import re
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from kubernetes.client import Configuration

# The standard service-account mounts (the package's incluster_config names the same).
SERVICE_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
SERVICE_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"

# A remote Secret's kubeconfig, as `istioctl create-remote-secret` writes it, is a few kB
# (a CA, a token); a client certificate and key fit easily. Past this it is refused
# before the YAML parser walks it.
MAX_KUBECONFIG_BYTES = 64 * 1024
# And its shape: every line or YAML indicator may open a node, and a kubeconfig has a few
# dozen (istioctl's: about 40). libyaml composes the whole document in one call that never
# lets the event loop's thread take the GIL, so the node count is bounded too, not only
# the bytes: 500 of them cost about 1.5 ms of CPU.
MAX_KUBECONFIG_NODES = 500
_INDICATORS = "\n:,[]{}&*!"

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# What a remote Secret's kubeconfig may hold (Istio's rules since 1.12.1, and stricter:
# no file at all). `extensions` carry nothing the loader acts on; they are dropped.
_CLUSTER_FIELDS = {"server", "certificate-authority-data", "tls-server-name",
                   "insecure-skip-tls-verify"}
_USER_FIELDS = {"token", "client-certificate-data", "client-key-data"}
_DROPPED_FIELDS = {"extensions"}
_FILE_FIELDS = {"certificate-authority", "client-certificate", "client-key"}
_WORD = re.compile(r"[\x21-\x7e]+")
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,39}")


class CredentialsError(Exception):
    """A kubeconfig or in-cluster config that cannot be loaded."""


class Rejection(enum.StrEnum):
    """Why a remote Secret's kubeconfig was refused (a closed set: a metric label)."""

    TOO_LARGE = "too_large"
    NOT_YAML = "not_yaml"
    MALFORMED = "malformed"
    EXEC = "exec"
    AUTH_PROVIDER = "auth_provider"
    TOKEN_FILE = "token_file"
    FILE_PATH = "file_path"
    HTTP_SERVER = "http_server"
    INSECURE_SKIP_TLS_VERIFY = "insecure_skip_tls_verify"
    UNSUPPORTED_FIELD = "unsupported_field"


class Rejected(CredentialsError):
    """A remote Secret's kubeconfig that asks for what we never do for a Secret.

    Permanent: the same text is refused again, so it is not retried. The message names
    the field and the reason, never a value.
    """

    def __init__(self, reason: Rejection, detail: str, *, origin: str) -> None:
        super().__init__(f"kubeconfig from {origin} rejected ({reason}): {detail}")
        self.reason = reason


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
                self._ssl = _build_ssl(conf, self.origin)
                self._ssl_key = key
            return self._ssl

    @property
    def tls_server_name(self) -> str | None:
        return self._conf.tls_server_name or None

    def ca_pem(self) -> bytes | None:
        """The CA certificates the server is verified with (None: the system's)."""
        if not self._conf.ssl_ca_cert:
            return None
        try:
            with open(self._conf.ssl_ca_cert, "rb") as file:
                return file.read(MAX_KUBECONFIG_BYTES)
        except OSError as exc:
            raise CredentialsError(f"{self.origin}: CA file: {exc.strerror}") from exc


def _build_ssl(conf: Configuration, origin: str) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=conf.ssl_ca_cert or None)
        if not conf.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if conf.cert_file:
            context.load_cert_chain(conf.cert_file, conf.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise CredentialsError(f"{origin}: TLS files of {conf.host}: {exc}") from exc
    return context


def _new_configuration() -> Configuration:
    # A fresh Configuration each time: the process-wide default is never set or read.
    from kubernetes.client import Configuration
    return Configuration()


def from_kubeconfig_file(path: str, *, context: str = "") -> Credentials:
    """Load `path` (and `context`, default its current-context)."""
    from kubernetes.config import ConfigException, kube_config
    conf = _new_configuration()
    where = f"{path}" + (f" context {context}" if context else "")
    try:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                                     config_file=os.path.expanduser(path),
                                     context=context or None, client_configuration=conf,
                                     persist_config=False)
    except yaml.YAMLError as exc:
        raise CredentialsError(f"kubeconfig {where}: {yaml_problem(exc)}") from exc
    except (ConfigException, OSError, KeyError, TypeError) as exc:
        raise CredentialsError(f"kubeconfig {where}: {exc}") from exc
    return _checked(conf, where)


def from_kubeconfig_text(text: str, *, origin: str,
                         allow_insecure: bool = False) -> Credentials:
    """Load a remote Secret's kubeconfig (the value of one data key), its current-context.

    Only `server` (https; http with `allow_insecure`), `certificate-authority-data`,
    `tls-server-name`, `token`, `client-certificate-data` and `client-key-data` are
    used (and `insecure-skip-tls-verify` with `allow_insecure`); anything else raises
    `Rejected` before the kubernetes package sees the kubeconfig, which gets a copy
    rebuilt from the accepted fields only.
    """
    if len(text) > MAX_KUBECONFIG_BYTES or len(text.encode()) > MAX_KUBECONFIG_BYTES:
        raise Rejected(Rejection.TOO_LARGE, f"longer than {MAX_KUBECONFIG_BYTES} bytes",
                       origin=origin)
    if sum(text.count(c) for c in _INDICATORS) > MAX_KUBECONFIG_NODES:
        raise Rejected(Rejection.TOO_LARGE, f"more than {MAX_KUBECONFIG_NODES} lines and "
                       "YAML indicators", origin=origin)
    try:
        loaded = yaml.load(text, Loader=_LOADER)
    except (yaml.YAMLError, RecursionError) as exc:
        raise Rejected(Rejection.NOT_YAML, yaml_problem(exc), origin=origin) from None
    cluster, user = _judged(loaded, origin=origin, allow_insecure=allow_insecure)
    config = {"current-context": "remote",
              "contexts": [{"name": "remote", "context": {"cluster": "remote",
                                                          "user": "remote"}}],
              "clusters": [{"name": "remote", "cluster": cluster}],
              "users": [{"name": "remote", "user": user}]}
    from kubernetes.config import ConfigException, kube_config
    conf = _new_configuration()
    try:
        kube_config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
                                               config, client_configuration=conf,
                                               persist_config=False)
    except (ConfigException, OSError, ValueError) as exc:
        # Only the class: the package's messages may quote what it was given.
        raise CredentialsError(f"kubeconfig from {origin}: the kubernetes package refused "
                               f"it ({type(exc).__name__})") from None
    return _checked(conf, origin)


def _judged(loaded: Any, *, origin: str,
            allow_insecure: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The current context's cluster and user, holding only accepted fields."""
    def reject(reason: Rejection, detail: str) -> Rejected:
        return Rejected(reason, detail, origin=origin)

    if not isinstance(loaded, Mapping):
        raise reject(Rejection.MALFORMED, "not a kubeconfig mapping")
    current = loaded.get("current-context")
    context = _named(loaded, "contexts", "context", current)
    if context is None:
        raise reject(Rejection.MALFORMED, "current-context names no context")
    cluster = _named(loaded, "clusters", "cluster", context.get("cluster"))
    user = _named(loaded, "users", "user", context.get("user"))
    if cluster is None:
        raise reject(Rejection.MALFORMED, "the context names no cluster")
    if user is None:
        raise reject(Rejection.MALFORMED, "the context names no user")
    kept_cluster = _fields(cluster, _CLUSTER_FIELDS, reject, "cluster")
    kept_user = _fields(user, _USER_FIELDS, reject, "user")
    _check_server(kept_cluster.get("server"), reject, allow_insecure=allow_insecure)
    skip = kept_cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(skip, bool):
        raise reject(Rejection.MALFORMED, "insecure-skip-tls-verify is not a boolean")
    if skip and not allow_insecure:
        raise reject(Rejection.INSECURE_SKIP_TLS_VERIFY,
                     "insecure-skip-tls-verify needs remote_secrets.allow_insecure")
    values = {**kept_cluster, **kept_user}
    for name in ("tls-server-name", "token", "certificate-authority-data",
                 "client-certificate-data", "client-key-data"):
        if name in values and not isinstance(values[name], str):
            raise reject(Rejection.MALFORMED, f"{name} is not a string")
    for name in ("token", "tls-server-name"):
        if name in values and not _WORD.fullmatch(values[name]):
            raise reject(Rejection.MALFORMED, f"{name} is not one word of printable ASCII")
    for name in ("certificate-authority-data", "client-certificate-data", "client-key-data"):
        if name in values:
            try:
                base64.b64decode(values[name], validate=True)
            except (binascii.Error, ValueError):
                raise reject(Rejection.MALFORMED, f"{name} is not base64") from None
    if ("client-certificate-data" in kept_user) != ("client-key-data" in kept_user):
        raise reject(Rejection.MALFORMED,
                     "client-certificate-data and client-key-data go together")
    return kept_cluster, kept_user


def _named(loaded: Mapping[str, Any], section: str, field: str,
           name: Any) -> Mapping[str, Any] | None:
    """`field` of the entry of list `section` called `name`, if exactly one is."""
    entries = loaded.get(section)
    if not isinstance(name, str) or not isinstance(entries, list):
        return None
    found = [entry.get(field) for entry in entries
             if isinstance(entry, Mapping) and entry.get("name") == name]
    if len(found) != 1 or not isinstance(found[0], Mapping):
        return None
    return found[0]


_Reject = Callable[[Rejection, str], Rejected]


def _fields(section: Mapping[str, Any], allowed: set[str], reject: _Reject,
            where: str) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for field, value in section.items():
        if field in allowed:
            kept[field] = value
        elif field in _DROPPED_FIELDS:
            continue
        elif field == "exec":
            raise reject(Rejection.EXEC, f"{where} field exec would run a program")
        elif field == "auth-provider":
            raise reject(Rejection.AUTH_PROVIDER,
                         f"{where} field auth-provider would run a program or read files")
        elif field == "tokenFile":
            raise reject(Rejection.TOKEN_FILE, f"{where} field tokenFile would read a "
                         "local file and send it as a token")
        elif field in _FILE_FIELDS:
            raise reject(Rejection.FILE_PATH, f"{where} field {field} names a local file; "
                         f"only {field}-data is accepted")
        else:
            shown = field if isinstance(field, str) and _FIELD_NAME.fullmatch(field) \
                else "(unprintable)"
            raise reject(Rejection.UNSUPPORTED_FIELD, f"{where} field {shown} is not "
                         "accepted from a remote Secret")
    return kept


def _check_server(server: Any, reject: _Reject, *, allow_insecure: bool) -> None:
    if not isinstance(server, str) or not server:
        raise reject(Rejection.MALFORMED, "the cluster has no server")
    if not _WORD.fullmatch(server):
        # urlsplit drops tabs and newlines, the loader would keep them (in logs too).
        raise reject(Rejection.MALFORMED, "server is not one word of printable ASCII")
    try:
        url = urllib.parse.urlsplit(server)
        port = url.port
    except ValueError:
        raise reject(Rejection.MALFORMED, "server is not a URL") from None
    if url.scheme == "http":
        if not allow_insecure:
            raise reject(Rejection.HTTP_SERVER, "server is http://, not https:// "
                         "(remote_secrets.allow_insecure is false)")
    elif url.scheme != "https":
        raise reject(Rejection.MALFORMED, "server is not an https:// URL")
    if not url.hostname or url.username is not None or url.password is not None \
            or url.query or url.fragment or port == 0:
        raise reject(Rejection.MALFORMED,
                     "server must be scheme://host[:port][/path], with no user or query")


def yaml_problem(exc: BaseException) -> str:
    """A YAML error without the snippet PyYAML quotes (it may be a key's line)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    return f"not YAML ({type(exc).__name__}{where})"


def in_cluster(*, token_file: str = SERVICE_TOKEN_FILE, ca_file: str = SERVICE_CA_FILE,
               environ: Mapping[str, str] | None = None) -> Credentials:
    """The pod's service account: KUBERNETES_SERVICE_HOST/PORT, its token (re-read every
    minute, for bound tokens that rotate) and CA. The paths are the standard mounts."""
    from kubernetes.config import ConfigException, incluster_config
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
