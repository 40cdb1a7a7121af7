"""exporter-toolkit's TLS keys, honoured: real handshakes against the server on 127.0.0.1."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from retransmon.export.server import MetricsServer
from retransmon.export.tlscontext import TLS12_CIPHERS, allowed_san
from retransmon.export.webconfig import WebConfig, load
from tests.support.tls import Certificates, make_client_certificate


def _load(tmp_path: Path, text: str) -> WebConfig:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return load(str(path))


@pytest.fixture
def serve(registry: CollectorRegistry) -> Iterator[list[MetricsServer]]:
    servers: list[MetricsServer] = []
    yield servers
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _start(servers: list[MetricsServer], registry: CollectorRegistry, web: WebConfig) -> MetricsServer:
    srv = MetricsServer("127.0.0.1", 0, registry, request_timeout=2.0, web=web)
    srv.serve_in_thread()
    servers.append(srv)
    return srv


def _get(srv: MetricsServer, ctx: ssl.SSLContext) -> tuple[int, str | None]:
    """Status of GET /metrics, and the cipher negotiated."""
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=5, context=ctx)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        resp.read()
        negotiated = conn.sock.cipher() if isinstance(conn.sock, ssl.SSLSocket) else None
        return resp.status, negotiated[0] if negotiated else None
    finally:
        conn.close()


def _client(certs: Certificates, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    ctx = certs.client_context()
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def _tls(certs: Certificates, extra: str = "") -> str:
    return f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n" + extra


def _block(pem_path: str) -> str:
    return "|\n" + "".join(f"    {line}\n" for line in Path(pem_path).read_text().strip().splitlines())


def test_inline_certificate_key_and_client_ca(
    certs: Certificates, tmp_path: Path, registry: CollectorRegistry, serve: list[MetricsServer]
) -> None:
    text = (
        f"tls_server_config:\n  cert: {_block(certs.server_cert)}  key: {_block(certs.server_key)}"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca: {_block(certs.ca)}"
    )
    web = _load(tmp_path, text)
    assert web.tls is not None and web.tls.cert_file == "" and web.context is not None
    srv = _start(serve, registry, web)
    assert _get(srv, _client(certs, (certs.client_cert, certs.client_key)))[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _get(srv, _client(certs))
    assert not list(tmp_path.iterdir())[1:], "the inline key was written to disk"


def test_relative_paths_of_every_file(certs: Certificates, tmp_path: Path) -> None:
    for name, source in (("s.crt", certs.server_cert), ("s.key", certs.server_key), ("ca.pem", certs.ca)):
        (tmp_path / name).write_bytes(Path(source).read_bytes())
    text = (
        "tls_server_config:\n  cert_file: s.crt\n  key_file: s.key\n"
        "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n"
    )
    web = _load(tmp_path, text)
    assert web.tls is not None and web.tls.client_ca_file == str(tmp_path / "ca.pem")


def test_verify_if_given_without_a_ca_uses_the_system_roots(
    certs: Certificates, tmp_path: Path, registry: CollectorRegistry, serve: list[MetricsServer]
) -> None:
    # As Go with no ClientCAs: no certificate is fine; ours (a private CA) does not verify.
    srv = _start(
        serve, registry, _load(tmp_path, _tls(certs, "  client_auth_type: VerifyClientCertIfGiven\n"))
    )
    assert _get(srv, _client(certs))[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _get(srv, _client(certs, (certs.client_cert, certs.client_key)))


def test_cipher_suites_are_the_only_ones_offered(
    certs: Certificates, tmp_path: Path, registry: CollectorRegistry, serve: list[MetricsServer]
) -> None:
    chosen = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
    extra = f"  max_version: TLS12\n  cipher_suites: [{chosen}]\n"
    srv = _start(serve, registry, _load(tmp_path, _tls(certs, extra)))
    assert _get(srv, _client(certs)) == (200, TLS12_CIPHERS[chosen])
    other = _client(certs)
    other.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _get(srv, other)


# IANA's numbers for Go's names (crypto/tls constants), to check the mapping against OpenSSL's own.
IANA = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": 0x002F, "TLS_RSA_WITH_AES_256_CBC_SHA": 0x0035,
    "TLS_RSA_WITH_AES_128_GCM_SHA256": 0x009C, "TLS_RSA_WITH_AES_256_GCM_SHA384": 0x009D,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": 0xC009, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": 0xC00A,
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": 0xC013, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": 0xC014,
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": 0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": 0xC02C,
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": 0xC02F, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": 0xC030,
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA8,
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA9,
}  # fmt: skip


def test_every_go_cipher_name_is_the_same_openssl_cipher() -> None:
    assert set(IANA) == set(TLS12_CIPHERS)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for go_name, openssl_name in TLS12_CIPHERS.items():
        ctx.set_ciphers(openssl_name)
        offered = {c["name"]: c["id"] & 0xFFFF for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"}
        assert offered == {openssl_name: IANA[go_name]}, go_name


def test_prefer_server_cipher_suites(certs: Certificates, tmp_path: Path) -> None:
    on = _load(tmp_path, _tls(certs))
    off = _load(tmp_path, _tls(certs, "  prefer_server_cipher_suites: false\n"))
    assert on.context is not None and on.context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert off.context is not None and not off.context.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_curve_preferences_restrict_the_key_exchange(
    certs: Certificates, tmp_path: Path, registry: CollectorRegistry, serve: list[MetricsServer]
) -> None:
    srv = _start(serve, registry, _load(tmp_path, _tls(certs, "  curve_preferences: [CurveP384]\n")))
    p384 = _client(certs)
    p384.set_ecdh_curve("secp384r1")
    assert _get(srv, p384)[0] == 200
    x25519 = _client(certs)
    x25519.set_ecdh_curve("X25519")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _get(srv, x25519)


def test_client_allowed_sans(
    certs: Certificates, tmp_path: Path, registry: CollectorRegistry, serve: list[MetricsServer]
) -> None:
    extra = (
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {certs.ca}\n"
        "  client_allowed_sans: [prometheus.example, '2001:db8::7', 'spiffe://example/prom']\n"
    )
    srv = _start(serve, registry, _load(tmp_path, _tls(certs, extra)))
    dns = make_client_certificate(certs, "san-dns", "DNS:other.example,DNS:prometheus.example")
    ip = make_client_certificate(certs, "san-ip", "IP:2001:db8:0:0:0:0:0:7")
    uri = make_client_certificate(certs, "san-uri", "URI:spiffe://example/prom")
    wrong = make_client_certificate(certs, "san-wrong", "DNS:intruder.example,email:prom@example")
    for cert in (dns, ip, uri):
        assert _get(srv, _client(certs, cert))[0] == 200, cert
    for refused in (wrong, (certs.client_cert, certs.client_key)):  # the latter has no SAN at all
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            _get(srv, _client(certs, refused))


def test_allowed_san_kinds() -> None:
    peer = {"subjectAltName": (("DNS", "a"), ("email", "m@x"), ("URI", "u:1"), ("IP Address", "10.0.0.1"))}
    for value in ("a", "m@x", "u:1", "10.0.0.1"):
        assert allowed_san(peer, (value,))
    assert not allowed_san(peer, ("b", "A"))
    assert allowed_san({"subjectAltName": (("IP Address", "2001:DB8:0:0:0:0:0:1\n"),)}, ("2001:db8::1",))
    assert not allowed_san({"subjectAltName": (("DirName", "a"),)}, ("a",))
    assert not allowed_san({}, ("a",))
