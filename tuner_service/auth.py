"""Who may talk to the chief: bearer tokens and TLS, read from the environment (docs/security.md).

Server side, :class:`ServerSecurity` holds what the chief's two gRPC servers (oracle, status)
enforce; :mod:`tuner_service.grpc_server` applies it to both. Client side, :class:`ClientSecurity`
gives our worker and the status CLI a channel (TLS when a CA is configured) and the metadata to
send. Everything comes from the environment, never from arguments (``ps`` shows those) and never
from the shared storage:

- ``TUNER_SERVICE_AUTH_TOKEN``: the token a client sends; the chief accepts it.
- ``TUNER_SERVICE_AUTH_TOKENS_FILE``: tokens the chief accepts, one per line (``#`` comments),
  several files separated by ``:``, re-read when a file changes (a mounted Secret being
  rotated); a client without ``TUNER_SERVICE_AUTH_TOKEN`` sends the first one. Setting it turns
  auth on even while the files are missing or empty: then every call is refused (closed, never
  open).
- ``TUNER_SERVICE_TLS_CERT``, ``TUNER_SERVICE_TLS_KEY``: the chief serves TLS with this chain
  and key (PEM; cert-manager's ``tls.crt`` and ``tls.key``), re-read when they change.
- ``TUNER_SERVICE_TLS_CA``: clients dial with TLS and verify the chief against this CA
  (cert-manager's ``ca.crt``); ``TUNER_SERVICE_TLS_SERVER_NAME``: the name they expect in the
  certificate when it is not the host they dial (e.g. ``localhost`` after a port-forward).
- Optional mutual TLS: ``TUNER_SERVICE_TLS_CLIENT_CA`` makes the chief require client
  certificates signed by it; clients present ``TUNER_SERVICE_TLS_CLIENT_CERT`` and ``_KEY``.

The gRPC health service stays open without a token: the kubelet's probes cannot send one.

>>> tokens = TokenSet(("s3cret",))
>>> tokens.check((("authorization", "Bearer s3cret"),)) is None
True
>>> tokens.check(())
'missing bearer token'
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tuner_service import process

log = logging.getLogger(__name__)

# The variables' names are the process contract's (tuner_service/process.py).
TOKEN_ENV = process.AUTH_TOKEN
TOKENS_FILE_ENV = process.AUTH_TOKENS_FILE
TLS_CERT_ENV = process.TLS_CERT
TLS_KEY_ENV = process.TLS_KEY
TLS_CA_ENV = process.TLS_CA
TLS_SERVER_NAME_ENV = process.TLS_SERVER_NAME
TLS_CLIENT_CA_ENV = process.TLS_CLIENT_CA
TLS_CLIENT_CERT_ENV = process.TLS_CLIENT_CERT
TLS_CLIENT_KEY_ENV = process.TLS_CLIENT_KEY

AUTHORIZATION = process.AUTH_METADATA
SCHEME = process.AUTH_SCHEME
# Calls that never need a token: the kubelet's gRPC probes cannot send metadata.
OPEN_SERVICE_PREFIX = "/grpc.health.v1.Health/"
# How often at most the tokens files are looked at for changes (one stat per file).
RELOAD_INTERVAL = 1.0

Metadata = Sequence[tuple[str, str | bytes]]


class SecurityConfigError(Exception):
    """The auth or TLS settings in the environment are unusable (exit code 2)."""


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps hmac.compare_digest from leaking the token's length.
    return hashlib.sha256(token.encode("utf-8")).digest()


def _parse_tokens(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _split_paths(raw: str) -> tuple[Path, ...]:
    return tuple(Path(p) for p in raw.split(os.pathsep) if p)


class TokenSet:
    """The tokens a server accepts: fixed ones plus the lines of ``files``, re-read on change.

    Thread-safe; ``check`` is called on every RPC thread. A file that is missing (a Secret key
    not created yet) counts as empty.
    """

    def __init__(
        self,
        tokens: Iterable[str] = (),
        files: Sequence[Path] = (),
        clock: Callable[[], float] = time.monotonic,
    ):
        self._fixed = tuple(_digest(t) for t in tokens if t)
        self.files = tuple(files)
        self._clock = clock
        self._lock = threading.Lock()
        self._stamps: tuple[tuple[int, int, int] | None, ...] = ()
        self._from_files: tuple[bytes, ...] = ()
        self._checked = float("-inf")
        self._reload(force=True)

    def __len__(self) -> int:
        return len(self._fixed) + len(self._from_files)

    def _reload(self, force: bool = False) -> None:
        now = self._clock()
        if not self.files or (not force and now - self._checked < RELOAD_INTERVAL):
            return
        with self._lock:
            self._checked = now
            stamps = tuple(_stamp(p) for p in self.files)
            if stamps == self._stamps and not force:
                return
            tokens: list[bytes] = []
            for path in self.files:
                try:
                    tokens += [_digest(t) for t in _parse_tokens(path.read_text())]
                except FileNotFoundError:
                    continue
                except (OSError, UnicodeDecodeError) as err:
                    raise SecurityConfigError(f"{TOKENS_FILE_ENV}: cannot read {path} ({err})") from None
            if self._stamps and stamps != self._stamps:
                log.info("accepted tokens reloaded from %s: %d token(s)", _names(self.files), len(tokens))
            self._stamps, self._from_files = stamps, tuple(tokens)

    def accepts(self, token: str) -> bool:
        """Constant-time comparison against every accepted token (no early exit)."""
        try:
            self._reload()
        except SecurityConfigError as err:
            log.warning("%s; keeping the tokens read before", err)
        presented = _digest(token)
        ok = False
        for accepted in self._fixed + self._from_files:
            ok |= hmac.compare_digest(presented, accepted)
        return ok

    def check(self, metadata: Metadata | None) -> str | None:
        """None when the call carries an accepted token, else why not (never the token itself)."""
        values = [v for k, v in metadata or () if k == AUTHORIZATION]
        if not values:
            return "missing bearer token"
        value = values[0].decode("utf-8", "replace") if isinstance(values[0], bytes) else values[0]
        if len(values) > 1 or not value.startswith(SCHEME) or not value[len(SCHEME) :].strip():
            return "malformed authorization metadata (expected one 'Bearer <token>')"
        if not self.accepts(value[len(SCHEME) :].strip()):
            return "invalid bearer token"
        return None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced (the kubelet swaps a Secret's files by rename)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


def _names(paths: Iterable[Path]) -> str:
    return ", ".join(str(p) for p in paths)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuses every call without an accepted token with UNAUTHENTICATED, except health checks."""

    def __init__(self, tokens: TokenSet):
        self.tokens = tokens
        self._warned: set[str] = set()

    def intercept_service(self, continuation: Callable, handler_call_details: Any) -> Any:
        method: str = handler_call_details.method
        if method.startswith(OPEN_SERVICE_PREFIX):
            return continuation(handler_call_details)
        problem = self.tokens.check(handler_call_details.invocation_metadata)
        if problem is None:
            return continuation(handler_call_details)
        if problem not in self._warned:  # once per kind: a stray client must not flood the log
            self._warned.add(problem)
            log.warning("refused %s: %s (further refusals of this kind are logged at debug)", method, problem)
        else:
            log.debug("refused %s: %s", method, problem)
        handler = continuation(handler_call_details)
        return _refusal(handler, f"{problem}: this chief requires 'authorization: Bearer <token>' metadata")


def _refusal(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler | None:
    """A handler of the same shape as ``handler`` that aborts with UNAUTHENTICATED."""
    if handler is None:
        return None  # unknown method: gRPC answers UNIMPLEMENTED as usual

    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    def abort_stream(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - never reached; makes this a generator

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort_stream)
    return grpc.unary_unary_rpc_method_handler(abort)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a server certificate (cert-manager: ``tls.crt``, ``tls.key``)."""

    cert: Path
    key: Path
    client_ca: Path | None = None  # mutual TLS: clients must present a certificate it signed

    def read(self) -> tuple[bytes, bytes]:
        """(key, certificate chain), as gRPC wants them."""
        return _read(self.key, TLS_KEY_ENV), _read(self.cert, TLS_CERT_ENV)

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials that pick up a renewed certificate (cert-manager rotates the Secret's files)
        on the next handshake after the files change."""
        key, chain = self.read()
        stamps = [(_stamp(self.cert), _stamp(self.key))]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            now = (_stamp(self.cert), _stamp(self.key))
            if now == stamps[0]:
                return None  # unchanged: keep the current one
            try:
                config = grpc.ssl_server_certificate_configuration([self.read()], client_ca)
            except SecurityConfigError as err:
                log.warning("%s; keeping the certificate loaded before", err)
                return None
            stamps[0] = now
            log.info("TLS certificate reloaded from %s", self.cert)
            return config

        client_ca = _read(self.client_ca, TLS_CLIENT_CA_ENV) if self.client_ca else None
        initial = grpc.ssl_server_certificate_configuration([(key, chain)], client_ca)
        return grpc.dynamic_ssl_server_credentials(
            initial, fetch, require_client_authentication=client_ca is not None
        )


def _read(path: Path, env: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SecurityConfigError(f"{env}={str(path)!r}: cannot read it ({err.strerror or err})") from None
    if b"-----BEGIN " not in data:
        raise SecurityConfigError(f"{env}={str(path)!r}: not a PEM file")
    return data


@dataclass(frozen=True)
class ServerSecurity:
    """What the chief's gRPC servers require: a token (``tokens``), TLS (``tls``), both or none."""

    tokens: TokenSet | None = None
    tls: TlsFiles | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServerSecurity:
        """Read and check the settings; warn when a token would travel in plaintext."""
        token = environ.get(TOKEN_ENV, "").strip()
        files = _split_paths(environ.get(TOKENS_FILE_ENV, ""))
        tokens = TokenSet((token,), files) if token or files else None
        cert, key = environ.get(TLS_CERT_ENV, ""), environ.get(TLS_KEY_ENV, "")
        if bool(cert) != bool(key):
            raise SecurityConfigError(f"set both {TLS_CERT_ENV} and {TLS_KEY_ENV} (or neither)")
        client_ca = environ.get(TLS_CLIENT_CA_ENV, "")
        if client_ca and not cert:
            raise SecurityConfigError(f"{TLS_CLIENT_CA_ENV} needs TLS: set {TLS_CERT_ENV} and {TLS_KEY_ENV}")
        tls = TlsFiles(Path(cert), Path(key), Path(client_ca) if client_ca else None) if cert else None
        if tls is not None:
            tls.read()  # unreadable or not PEM: fail now, with the variable's name
            if tls.client_ca:
                _read(tls.client_ca, TLS_CLIENT_CA_ENV)
        security = cls(tokens, tls)
        if tokens is not None and tls is None:
            log.warning(
                "token auth is on without TLS: tokens and trials travel in plaintext on the pod "
                "network; set %s and %s (docs/security.md)",
                TLS_CERT_ENV,
                TLS_KEY_ENV,
            )
        if tokens is not None and files and not len(tokens):
            log.warning(
                "%s names no readable token yet: every call is refused until it does", TOKENS_FILE_ENV
            )
        return security

    @property
    def interceptors(self) -> tuple[grpc.ServerInterceptor, ...]:
        return (BearerTokenInterceptor(self.tokens),) if self.tokens is not None else ()

    def describe(self) -> str:
        """For the chief's start-up log line (no secrets)."""
        auth = f"token auth ({len(self.tokens)} token(s))" if self.tokens is not None else "no auth"
        return f"{auth}, {'TLS' if self.tls else 'plaintext'}"


@dataclass(frozen=True)
class ClientSecurity:
    """How our clients dial the chief: the token to send and, with a CA, TLS that verifies it."""

    token: str | None = None
    ca: Path | None = None
    server_name: str | None = None
    cert: Path | None = None  # mutual TLS: the client certificate and key to present
    key: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSecurity:
        env = os.environ if environ is None else environ
        token = env.get(TOKEN_ENV, "").strip() or _first_token(_split_paths(env.get(TOKENS_FILE_ENV, "")))
        ca, cert, key = (env.get(name, "") for name in (TLS_CA_ENV, TLS_CLIENT_CERT_ENV, TLS_CLIENT_KEY_ENV))
        if bool(cert) != bool(key):
            raise SecurityConfigError(f"set both {TLS_CLIENT_CERT_ENV} and {TLS_CLIENT_KEY_ENV} (or neither)")
        return cls(
            token or None,
            Path(ca) if ca else None,
            env.get(TLS_SERVER_NAME_ENV) or None,
            Path(cert) if cert else None,
            Path(key) if key else None,
        )

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((AUTHORIZATION, f"{SCHEME}{self.token}"),) if self.token else ()

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A channel to ``address``: TLS verified against the CA when one is set, else plaintext."""
        if self.ca is None:
            return grpc.insecure_channel(address, options=list(options))
        pair = (
            (_read(self.key, TLS_CLIENT_KEY_ENV), _read(self.cert, TLS_CLIENT_CERT_ENV))
            if self.cert and self.key
            else (None, None)
        )
        credentials = grpc.ssl_channel_credentials(_read(self.ca, TLS_CA_ENV), *pair)
        opts = list(options)
        if self.server_name:
            opts.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.secure_channel(address, credentials, options=opts)


def _first_token(files: Sequence[Path]) -> str:
    for path in files:
        try:
            tokens = _parse_tokens(path.read_text())
        except (OSError, UnicodeDecodeError):
            continue
        if tokens:
            return tokens[0]
    return ""
