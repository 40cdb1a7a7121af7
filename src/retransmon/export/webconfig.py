"""``--web.config.file``: Prometheus exporter-toolkit's web config, every key of it.

    tls_server_config:
      cert_file: server.crt          # or cert: <inline PEM>; relative paths are relative to this file
      key_file: server.key           # or key: <inline PEM>
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients.pem    # or client_ca: <inline PEM>; neither: the system's roots
      client_allowed_sans: [prometheus.example]
      min_version: TLS12             # default TLS12, max_version default TLS13
      cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]   # Go's names, TLS 1.2
      prefer_server_cipher_suites: true
      curve_preferences: [X25519]    # one curve: Python's ssl sets no list
    http_server_config:
      http2: true                    # accepted; this server speaks HTTP/1.1
      headers:
        Strict-Transport-Security: max-age=31536000
    rate_limit: {interval: 1s, burst: 10}
    basic_auth_users:
      prometheus: $2b$12$...         # bcrypt hash, checked on first use

The file is read the way exporter-toolkit reads it (goyaml). Everything is
checked at start-up; a problem is one line naming the file and the key, exit 2.
A :class:`Refusal` is a file exporter-toolkit takes but this server cannot honour
(each reason is in docs/deployment.md). A ``tls_server_config`` that does not
make a working TLS server is always an error: never plain HTTP instead.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

import bcrypt

from retransmon.errors import UsageError
from retransmon.export import goyaml, tlscontext
from retransmon.export.goyaml import Problem

TOP_LEVEL = ("tls_server_config", "http_server_config", "rate_limit", "basic_auth_users")
TLS_KEYS = (
    "cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
    "client_allowed_sans", "min_version", "max_version", "cipher_suites", "prefer_server_cipher_suites",
    "curve_preferences",
)  # fmt: skip
HTTP_KEYS = ("http2", "headers")
RATE_LIMIT_KEYS = ("interval", "burst")
# exporter-toolkit's names; TLS10 and TLS11 are refused (see _version).
TLS_VERSION_NAMES = ("TLS10", "TLS11", "TLS12", "TLS13")
CLIENT_AUTH_TYPES = ("NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
# Go's crypto/tls can ask for a certificate and not verify it; Python's ssl (OpenSSL without a
# verify callback) cannot. RequireClientCert is exporter-toolkit's old name for RequireAnyClientCert.
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
# As in exporter-toolkit: only these headers, and for two of them only these values.
ALLOWED_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}


class Refusal(Problem):
    """A file exporter-toolkit accepts, refused because this server cannot honour it."""


@dataclass(frozen=True)
class TLSConfig:
    cert_file: str = ""
    key_file: str = ""
    cert: str = ""  # inline PEM, instead of cert_file
    key: str = ""
    client_ca_file: str = ""
    client_ca: str = ""
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: tuple[str, ...] | None = None  # None: not checked
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()  # Go names; empty: OpenSSL's defaults
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()  # Go names; empty: OpenSSL's defaults


@dataclass(frozen=True)
class RateLimit:
    interval: float  # seconds between two requests, on average
    burst: int  # requests allowed at once


@dataclass(frozen=True)
class WebConfig:
    tls: TLSConfig | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: dict[str, str] = field(default_factory=dict)
    http2: bool | None = None  # None: not given
    rate_limit: RateLimit | None = None
    context: ssl.SSLContext | None = field(default=None, compare=False)  # built by read()


def load(path: str) -> WebConfig:
    """Read, validate and try out a web config file; UsageError (exit 2, one line) if it is wrong."""
    try:
        return read(path)
    except Problem as exc:
        raise UsageError(f"--web.config.file {path}: {exc}") from None


def read(path: str) -> WebConfig:
    """As load(), raising Problem (or Refusal) without the file's name."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise UsageError(f"--web.config.file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--web.config.file {path}: not UTF-8 text") from None
    config = parse(text, base_dir=os.path.dirname(os.path.abspath(path)))
    if config.tls is not None:
        try:
            tlscontext.check(config.tls)
            config = dataclasses.replace(config, context=tlscontext.build(config.tls))
        except tlscontext.NoWorkingServer as exc:
            raise Refusal(f"tls_server_config: {exc}") from None
        except tlscontext.TLSProblem as exc:
            raise Problem(f"tls_server_config: {exc}") from None
    return config


def parse(text: str, base_dir: str = ".") -> WebConfig:
    doc = goyaml.load(text)
    if goyaml.is_null(doc):
        return WebConfig()  # an empty file: plain HTTP, no auth, as in exporter-toolkit
    section = goyaml.mapping(doc, "the file", TOP_LEVEL)
    http = goyaml.mapping(section.get("http_server_config"), "http_server_config", HTTP_KEYS)
    http2 = http.get("http2")
    return WebConfig(
        headers=_headers(http.get("headers")),
        http2=None if goyaml.is_null(http2) else goyaml.boolean(http2, "http_server_config.http2", True),
        rate_limit=_rate_limit(section.get("rate_limit")),
        users=_users(section.get("basic_auth_users")),
        tls=_tls(section.get("tls_server_config"), base_dir),
    )


def _headers(value: Any) -> dict[str, str]:
    if goyaml.is_null(value):
        return {}
    if not isinstance(value, dict):
        raise Problem("http_server_config.headers must be a mapping of header name to value")
    headers: dict[str, str] = {}
    for name, raw in value.items():
        if name not in ALLOWED_HEADERS:
            raise Problem(
                f"http_server_config.headers: {str(name)!r} can not be configured; "
                f"allowed: {', '.join(ALLOWED_HEADERS)}"
            )
        text = goyaml.string(raw, f"http_server_config.headers.{name}")
        allowed = ALLOWED_HEADERS[name]
        if allowed and text not in allowed:
            raise Problem(f"http_server_config.headers.{name}: {text!r} is not one of {', '.join(allowed)}")
        if text:  # "unset if blank"
            # Line breaks become spaces, as Go's net/http writes them: a value cannot add a header.
            headers[str(name)] = re.sub(r"[\r\n]", " ", text)
    return headers


def _rate_limit(value: Any) -> RateLimit | None:
    section = goyaml.mapping(value, "rate_limit", RATE_LIMIT_KEYS)
    interval = goyaml.duration(section.get("interval"), "rate_limit.interval")
    burst = goyaml.integer(section.get("burst"), "rate_limit.burst")
    if interval <= 0:
        return None  # 0 turns it off; below 0 is an unlimited rate in exporter-toolkit (rate.Every)
    if burst < 1:
        raise Refusal(f"rate_limit.burst {burst}: must be at least 1, or every request would be refused")
    return RateLimit(interval, burst)


def _users(value: Any) -> dict[str, bytes]:
    if goyaml.is_null(value):
        return {}
    if not isinstance(value, dict):
        raise Problem("basic_auth_users must be a mapping of user name to bcrypt hash")
    users: dict[str, bytes] = {}
    for user, hashed in value.items():
        name = str(user)
        digest = goyaml.string(hashed, f"basic_auth_users.{name}").encode()
        problem = go_bcrypt_problem(digest)
        if problem:
            raise Problem(f"basic_auth_users.{name}: not a bcrypt hash ({problem})")
        if not usable_bcrypt(digest):
            raise Refusal(
                f"basic_auth_users.{name}: no password can match this hash here "
                "(expected $2a$, $2b$, $2x$ or $2y$, a cost from 04 to 31, then 53 characters "
                "of bcrypt's base64)"
            )
        users[name] = digest
    return users


def go_bcrypt_problem(digest: bytes) -> str | None:
    """What Go's bcrypt.Cost (exporter-toolkit's only check) finds wrong with a hash, None if nothing."""
    if len(digest) < 59:
        return "too short"
    if digest[0:1] != b"$" or digest[1:2] > b"2":
        return "unknown prefix"
    start = 3 if digest[2:3] == b"$" else 4
    cost = digest[start : start + 2].decode("ascii", "replace")
    if not re.fullmatch(r"[+-]?[0-9]+", cost) or not 4 <= int(cost) <= 31:
        return f"cost {cost!r} is not from 04 to 31"
    return None


_BCRYPT = re.compile(rb"\$2[abxy]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


def usable_bcrypt(digest: bytes) -> bool:
    """Whether bcrypt can check passwords against *digest*, found without paying its cost."""
    if not _BCRYPT.fullmatch(digest):
        return False
    try:  # the same salt at the lowest cost: parses as the real check will, in about a millisecond
        bcrypt.hashpw(b"", digest[:4] + b"04" + digest[6:29])
    except ValueError:
        return False
    return True


def bcrypt_cost(digest: bytes) -> int | None:
    """The cost of a usable bcrypt hash ``$2b$12$<53 chars>``, None if it is not one."""
    return int(digest[4:6]) if _BCRYPT.fullmatch(digest) else None


def _tls(value: Any, base_dir: str) -> TLSConfig | None:
    tls = goyaml.mapping(value, "tls_server_config", TLS_KEYS)
    given = {key: raw for key, raw in tls.items() if not goyaml.is_null(raw)}
    if not given:
        return None  # no tls_server_config (or an empty one): plain HTTP, as in exporter-toolkit
    text = {
        key: goyaml.string(given.get(key), f"tls_server_config.{key}")
        for key in ("cert", "key", "client_ca", "cert_file", "key_file", "client_ca_file", "client_auth_type")
    }
    lists = {
        key: goyaml.string_list(given.get(key), f"tls_server_config.{key}")
        for key in ("client_allowed_sans", "cipher_suites", "curve_preferences")
    }
    for name in lists["cipher_suites"]:
        if name not in tlscontext.CIPHER_SUITES:
            raise Problem(f"tls_server_config.cipher_suites: unknown cipher {name!r} (Go's names, e.g. "
                          "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)")  # fmt: skip
    for name in lists["curve_preferences"]:
        if name not in tlscontext.CURVES:
            raise Problem(
                f"tls_server_config.curve_preferences: unknown curve {name!r}; "
                f"known: {', '.join(tlscontext.CURVES)}"
            )
    versions = {
        key: _version(given.get(key), key, default)
        for key, default in (("min_version", "TLS12"), ("max_version", "TLS13"))
    }
    prefer = goyaml.boolean(
        given.get("prefer_server_cipher_suites"), "tls_server_config.prefer_server_cipher_suites", True
    )
    auth = text["client_auth_type"] or "NoClientCert"
    if auth not in (*CLIENT_AUTH_TYPES, *UNVERIFIED_CLIENT_AUTH):
        raise Problem(
            f"tls_server_config.client_auth_type {auth!r} is not one of "
            f"{', '.join((*CLIENT_AUTH_TYPES, *UNVERIFIED_CLIENT_AUTH))}"
        )
    for inline, path in (("cert", "cert_file"), ("key", "key_file"), ("client_ca", "client_ca_file")):
        if text[inline] and text[path]:
            raise Problem(f"tls_server_config: both {inline} and {path} are given; use one")
    if not (text["cert"] or text["cert_file"] or text["key"] or text["key_file"]) and not (
        text["client_ca"] or text["client_ca_file"] or text["client_auth_type"]
    ):
        raise Refusal(
            "tls_server_config has no certificate (cert_file or cert): exporter-toolkit would serve "
            "plain HTTP, retransmon never does when TLS is configured"
        )
    if not (text["cert"] or text["cert_file"]):
        raise Problem("tls_server_config: missing cert_file (or cert)")
    if not (text["key"] or text["key_file"]):
        raise Problem("tls_server_config: missing key_file (or key)")
    if (text["client_ca"] or text["client_ca_file"]) and auth == "NoClientCert":
        raise Problem("tls_server_config: a client CA is given but client_auth_type is NoClientCert")
    if auth in UNVERIFIED_CLIENT_AUTH:
        raise Refusal(
            f"tls_server_config.client_auth_type {auth} (asking for a client certificate that is then "
            "not verified) is not supported: OpenSSL through Python's ssl cannot; use "
            "RequireAndVerifyClientCert"
        )
    sans = lists["client_allowed_sans"]
    if "client_allowed_sans" in given:
        if auth != "RequireAndVerifyClientCert":
            raise Refusal(
                "tls_server_config.client_allowed_sans needs client_auth_type RequireAndVerifyClientCert "
                "(otherwise a client may connect without a certificate to check)"
            )
        if not sans:
            raise Refusal("tls_server_config.client_allowed_sans is empty: no client could connect")
    if len(set(lists["curve_preferences"])) > 1:
        raise Refusal(
            "tls_server_config.curve_preferences with more than one curve is not supported: Python's ssl "
            "restricts a server to one curve or none; list one, or leave it out for OpenSSL's defaults"
        )
    return TLSConfig(
        cert_file=_path(text["cert_file"], base_dir),
        key_file=_path(text["key_file"], base_dir),
        cert=text["cert"],
        key=text["key"],
        client_ca_file=_path(text["client_ca_file"], base_dir),
        client_ca=text["client_ca"],
        client_auth_type=auth,
        client_allowed_sans=tuple(sans) if "client_allowed_sans" in given else None,
        min_version=versions["min_version"],
        max_version=versions["max_version"],
        cipher_suites=tuple(lists["cipher_suites"]),
        prefer_server_cipher_suites=prefer,
        curve_preferences=tuple(dict.fromkeys(lists["curve_preferences"])),
    )


def _version(value: Any, key: str, default: str) -> str:
    if goyaml.is_null(value):
        return default
    version = goyaml.string(value, f"tls_server_config.{key}")  # "" is an unknown version, as in Go
    if version not in TLS_VERSION_NAMES:
        raise Problem(f"tls_server_config.{key} {version!r} is not one of {', '.join(TLS_VERSION_NAMES)}")
    if version not in tlscontext.TLS_VERSIONS:
        raise Refusal(
            f"tls_server_config.{key} {version} is not supported: TLS 1.0 and 1.1 are deprecated "
            "(RFC 8996) and OpenSSL 3 offers them only at security level 0, which would weaken every "
            "connection; TLS12 is the lowest"
        )
    return version


def _path(path: str, base_dir: str) -> str:
    return path if not path or os.path.isabs(path) else os.path.join(base_dir, path)
