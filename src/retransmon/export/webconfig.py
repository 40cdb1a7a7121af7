"""``--web.config.file``: TLS, basic auth and response headers, in Prometheus exporter-toolkit's format.

    tls_server_config:
      cert_file: server.crt          # relative paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional
      client_ca_file: clients.pem                    # with a verifying client_auth_type
      min_version: TLS12             # the default, and the lowest accepted
      max_version: TLS13
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:
      prometheus: $2b$12$...         # bcrypt hash (htpasswd -nBC 12 '' | tr -d ':\\n')

Everything is checked at start-up; a problem is one line naming the file and the key (exit 2).
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import yaml

from retransmon.errors import UsageError

TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
OLD_TLS_VERSIONS = ("TLS10", "TLS11")
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go's crypto/tls can ask for a certificate it then does not verify; OpenSSL (Python's ssl) cannot.
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
# As in exporter-toolkit: only these headers, and for two of them only these values.
ALLOWED_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
TOP_LEVEL = ("tls_server_config", "http_server_config", "basic_auth_users")
TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version")
HTTP_KEYS = ("headers", "http2")


@dataclass(frozen=True)
class TLSConfig:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: str = "TLS12"
    max_version: str | None = None


@dataclass(frozen=True)
class WebConfig:
    tls: TLSConfig | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: dict[str, str] = field(default_factory=dict)
    context: ssl.SSLContext | None = field(default=None, compare=False)  # built by load()


class _Problem(Exception):
    """A problem in the file, turned into a UsageError naming the file."""


def load(path: str) -> WebConfig:
    """Read, validate and try out (certificates load, hashes parse) a web config file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise UsageError(f"--web.config.file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--web.config.file {path}: not UTF-8 text") from None
    try:
        config = parse(text, base_dir=os.path.dirname(os.path.abspath(path)))
        if config.tls is not None:
            config = dataclasses.replace(config, context=build_ssl_context(config.tls))
    except _Problem as exc:
        raise UsageError(f"--web.config.file {path}: {exc}") from None
    return config


def parse(text: str, base_dir: str = ".") -> WebConfig:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise _Problem(f"YAML error{where}: {problem}") from None
    if doc is None:
        return WebConfig()  # an empty file: plain HTTP, no auth, as in exporter-toolkit
    section = _mapping(doc, "the file", TOP_LEVEL)
    return WebConfig(
        tls=_tls(section.get("tls_server_config"), base_dir),
        users=_users(section.get("basic_auth_users")),
        headers=_headers(section.get("http_server_config")),
    )


def _mapping(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Problem(f"{where} must be a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise _Problem(f"unknown key {key!r} in {where}; known: {', '.join(allowed)}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _Problem(f"{where} must be a non-empty string")
    return value


def _tls(value: Any, base_dir: str) -> TLSConfig | None:
    if value is None:
        return None
    tls = _mapping(value, "tls_server_config", TLS_KEYS)
    cert, key = tls.get("cert_file"), tls.get("key_file")
    if not cert and not key:
        return None  # exporter-toolkit: no certificate means plain HTTP
    if not cert:
        raise _Problem("tls_server_config: key_file given without cert_file")
    if not key:
        raise _Problem("tls_server_config: cert_file given without key_file")
    auth = tls.get("client_auth_type") or "NoClientCert"
    if auth in UNVERIFIED_CLIENT_AUTH:
        raise _Problem(
            f"tls_server_config.client_auth_type {auth} (a client certificate that is not verified) "
            "is not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
        )
    if auth not in CLIENT_AUTH:
        raise _Problem(f"tls_server_config.client_auth_type {auth!r} is not one of {', '.join(CLIENT_AUTH)}")
    ca = tls.get("client_ca_file")
    if ca and auth == "NoClientCert":
        raise _Problem("tls_server_config: client_ca_file given but client_auth_type is NoClientCert")
    if not ca and auth != "NoClientCert":
        raise _Problem(f"tls_server_config: client_auth_type {auth} needs client_ca_file")
    versions = {}
    for name in ("min_version", "max_version"):
        version = tls.get(name)
        if version is None:
            continue
        if version in OLD_TLS_VERSIONS:
            raise _Problem(f"tls_server_config.{name} {version}: TLS 1.2 is the lowest version allowed")
        if version not in TLS_VERSIONS:
            raise _Problem(f"tls_server_config.{name} {version!r} is not one of {', '.join(TLS_VERSIONS)}")
        versions[name] = version
    low, high = versions.get("min_version", "TLS12"), versions.get("max_version")
    if high is not None and TLS_VERSIONS[high] < TLS_VERSIONS[low]:
        raise _Problem(f"tls_server_config: max_version {high} is below min_version {low}")
    return TLSConfig(
        cert_file=_path(_string(cert, "tls_server_config.cert_file"), base_dir),
        key_file=_path(_string(key, "tls_server_config.key_file"), base_dir),
        client_auth_type=auth,
        client_ca_file=_path(_string(ca, "tls_server_config.client_ca_file"), base_dir) if ca else None,
        min_version=low,
        max_version=high,
    )


def _path(path: str, base_dir: str) -> str:
    return path if os.path.isabs(path) else os.path.join(base_dir, path)


def _users(value: Any) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Problem("basic_auth_users must be a mapping of user name to bcrypt hash")
    users: dict[str, bytes] = {}
    for user, hashed in value.items():
        name = str(user)
        if not name or ":" in name:
            raise _Problem(f"basic_auth_users: user name {name!r} must be non-empty and have no ':'")
        digest = _string(hashed, f"basic_auth_users.{name}").encode()
        if bcrypt_cost(digest) is None:
            raise _Problem(f"basic_auth_users.{name}: not a bcrypt hash ($2a$/$2b$/$2y$, cost 4-31)")
        try:
            bcrypt.checkpw(b"", digest)
        except ValueError:
            raise _Problem(f"basic_auth_users.{name}: not a valid bcrypt hash") from None
        users[name] = digest
    return users


def bcrypt_cost(digest: bytes) -> int | None:
    """The cost of a modular-crypt bcrypt hash ``$2b$12$<53 chars>``, None if it is not one."""
    parts = digest.split(b"$")
    if len(parts) != 4 or parts[0] != b"" or parts[1] not in (b"2a", b"2b", b"2y"):
        return None
    if len(parts[2]) != 2 or not parts[2].isdigit() or len(parts[3]) != 53:
        return None
    cost = int(parts[2])
    return cost if 4 <= cost <= 31 else None


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    http = _mapping(value, "http_server_config", HTTP_KEYS)
    if http.get("http2") not in (None, True, False):
        raise _Problem("http_server_config.http2 must be true or false (HTTP/1.1 is served either way)")
    raw = http.get("headers")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _Problem("http_server_config.headers must be a mapping of header name to value")
    headers: dict[str, str] = {}
    for name, header_value in raw.items():
        if name not in ALLOWED_HEADERS:
            raise _Problem(
                f"http_server_config.headers: {name!r} can not be configured; "
                f"allowed: {', '.join(ALLOWED_HEADERS)}"
            )
        text = _string(header_value, f"http_server_config.headers.{name}")
        if any(c in text for c in "\r\n\0"):
            raise _Problem(f"http_server_config.headers.{name}: line breaks are not allowed in a value")
        allowed = ALLOWED_HEADERS[name]
        if allowed and text not in allowed:
            raise _Problem(f"http_server_config.headers.{name}: {text!r} is not one of {', '.join(allowed)}")
        headers[name] = text
    return headers


def build_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """A server context: TLS 1.2 or newer, the certificate loaded, client certificates as configured."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    if tls.max_version:
        ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except FileNotFoundError as exc:
        raise _Problem(f"tls_server_config: cannot read {exc.filename or tls.cert_file}") from None
    except (ssl.SSLError, OSError) as exc:
        raise _Problem(
            f"tls_server_config: cannot load the certificate {tls.cert_file} with the key "
            f"{tls.key_file} ({_ssl_reason(exc)})"
        ) from None
    if tls.client_ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise _Problem(
                f"tls_server_config: cannot load client_ca_file {tls.client_ca_file} ({_ssl_reason(exc)})"
            ) from None
    ctx.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    return ctx


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
    return str(reason or exc).replace("\n", " ")
