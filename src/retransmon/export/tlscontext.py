"""An OpenSSL server context (Python's ssl) from exporter-toolkit's ``tls_server_config``.

Go names of cipher suites and curves are mapped to OpenSSL's; the context is
then tried with a handshake over memory buffers, so a configuration that loads
but could never complete a handshake (no cipher usable with the key, versions
that exclude each other) is an error at start-up, never a server that fails
every client or, worse, one that falls back to plain HTTP.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retransmon.export.webconfig import TLSConfig

TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}

# Go's tls.CipherSuites() (the ones exporter-toolkit accepts) -> OpenSSL's names, for TLS 1.2.
TLS12_CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# Accepted, as by exporter-toolkit, and without effect: neither Go nor this server lets TLS 1.3's be chosen.
TLS13_CIPHERS = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
CIPHER_SUITES = (*TLS12_CIPHERS, *TLS13_CIPHERS)

# Go's curve names (exporter-toolkit's list) -> OpenSSL's.
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}

CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


class TLSProblem(Exception):
    """The TLS configuration cannot be loaded: one line."""


class NoWorkingServer(TLSProblem):
    """It loads, but no client could ever complete a handshake (exporter-toolkit would start anyway)."""


def build(tls: TLSConfig, *, verify_clients: bool = True) -> ssl.SSLContext:
    """A server context as *tls* describes; TLSProblem if it cannot be built."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    _load_certificate(ctx, tls)
    if tls.cipher_suites:
        _set_ciphers(ctx, tls.cipher_suites)
    if not tls.prefer_server_cipher_suites:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.curve_preferences:
        # Python's ssl sets exactly one group (SSL_CTX_set1_groups with one entry); webconfig allows one.
        ctx.set_ecdh_curve(CURVES[tls.curve_preferences[0]])
    if verify_clients and tls.client_auth_type != "NoClientCert":
        _load_client_cas(ctx, tls)
        ctx.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    return ctx


def _load_certificate(ctx: ssl.SSLContext, tls: TLSConfig) -> None:
    with _pem_path(tls.cert_file, tls.cert) as cert, _pem_path(tls.key_file, tls.key) as key:
        try:
            ctx.load_cert_chain(cert, key)
        except FileNotFoundError as exc:
            raise TLSProblem(f"cannot read {exc.filename or cert}") from None
        except (ssl.SSLError, OSError) as exc:
            cert_name = tls.cert_file or "cert (inline)"
            key_name = tls.key_file or "key (inline)"
            raise TLSProblem(
                f"cannot load the certificate {cert_name} with the key {key_name} ({_reason(exc)})"
            ) from None


@contextlib.contextmanager
def _pem_path(path: str, inline: str) -> Iterator[str]:
    """A path to read PEM from: the file, or the inline text in a memory-only file (never on disk)."""
    if path:
        yield path
        return
    fd = os.memfd_create("retransmon-pem", os.MFD_CLOEXEC)
    try:
        os.write(fd, inline.encode())
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _load_client_cas(ctx: ssl.SSLContext, tls: TLSConfig) -> None:
    if not (tls.client_ca_file or tls.client_ca):
        # As Go does with no ClientCAs: the system's trusted roots.
        ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        return
    source = f"client_ca_file {tls.client_ca_file}" if tls.client_ca_file else "client_ca (inline)"
    try:
        if tls.client_ca_file:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        else:
            ctx.load_verify_locations(cadata=tls.client_ca)
    except OSError as exc:
        if not isinstance(exc, ssl.SSLError):
            raise TLSProblem(f"cannot read client_ca_file {tls.client_ca_file}: {exc.strerror}") from None
        # Go skips what is not a certificate; with nothing left no client certificate verifies.
        raise NoWorkingServer(f"cannot load {source} ({_reason(exc)})") from None
    except ValueError as exc:
        raise NoWorkingServer(f"cannot load {source} ({_reason(exc)})") from None
    if not ctx.get_ca_certs():
        raise NoWorkingServer(f"{source} holds no certificate, so no client certificate could be verified")


def _set_ciphers(ctx: ssl.SSLContext, names: tuple[str, ...]) -> None:
    openssl = [TLS12_CIPHERS[name] for name in names if name in TLS12_CIPHERS]
    if not openssl:
        # Only TLS 1.3 suites: TLS 1.2 is left without a cipher, as in Go; check() decides if that works.
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return
    try:
        ctx.set_ciphers(":".join(openssl))
    except ssl.SSLError:
        raise NoWorkingServer(f"this OpenSSL offers none of cipher_suites {', '.join(names)}") from None


def check(tls: TLSConfig) -> None:
    """Complete a handshake with OpenSSL's client, in memory: TLSProblem if no client ever could."""
    if TLS_VERSIONS[tls.max_version] < TLS_VERSIONS[tls.min_version]:
        raise NoWorkingServer(f"max_version {tls.max_version} is below min_version {tls.min_version}")
    server_ctx = build(tls, verify_clients=False)
    if server_ctx.minimum_version > server_ctx.maximum_version:
        raise NoWorkingServer(
            "cipher_suites lists only TLS 1.3 suites, which leaves TLS 1.2 without a cipher, "
            f"and max_version is {tls.max_version}"
        )
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.set_ciphers("ALL")
    problem = _handshake(server_ctx, client_ctx)
    if problem:
        raise NoWorkingServer(f"no TLS client could connect with these settings ({problem})")


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> str | None:
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(client_in, client_out)
    server = server_ctx.wrap_bio(server_in, server_out, server_side=True)
    pending = [client, server]
    for _ in range(10):
        for end in list(pending):
            try:
                end.do_handshake()
                pending.remove(end)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                return _reason(exc)
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if not pending:
            return None
    return "the handshake did not finish"


def allowed_san(peer: dict[str, Any], allowed: tuple[str, ...]) -> bool:
    """Whether a verified client certificate has a DNS, IP, email or URI SAN that is in *allowed*.

    Values are compared as exporter-toolkit compares them: exactly, IP addresses in Go's
    text form (2001:db8::1, not 2001:DB8:0:0:0:0:0:1 as OpenSSL prints them).
    """
    for kind, value in peer.get("subjectAltName", ()):
        if kind == "IP Address":
            if _go_ip(value) in allowed:
                return True
        elif kind in ("DNS", "email", "URI") and value in allowed:
            return True
    return False


def _go_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return text


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
    return str(reason or exc).replace("\n", " ")
