"""Throw-away certificates for TLS tests, made with the openssl command line tool.

A CA, a server certificate for 127.0.0.1/localhost signed by it, and a client
certificate signed by it (for client_auth_type tests). Nothing leaves *directory*.
"""

from __future__ import annotations

import os
import ssl
import subprocess
from dataclasses import dataclass

import bcrypt


@dataclass(frozen=True)
class Certificates:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    def client_context(self, with_client_cert: bool = False) -> ssl.SSLContext:
        """A client context trusting our CA (and presenting the client certificate if asked)."""
        ctx = ssl.create_default_context(cafile=self.ca)
        if with_client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _signed(
    directory: str, name: str, subject: str, *, ca: str, ca_key: str, extensions: str
) -> tuple[str, str]:
    key, csr, cert, ext = (os.path.join(directory, f"{name}.{s}") for s in ("key", "csr", "crt", "ext"))
    with open(ext, "w") as f:
        f.write(extensions)
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", subject,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext,
    )  # fmt: skip
    return cert, key


def make_certificates(directory: str) -> Certificates:
    os.makedirs(directory, exist_ok=True)
    ca, ca_key = os.path.join(directory, "ca.crt"), os.path.join(directory, "ca.key")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=retransmon test CA",
    )  # fmt: skip
    server_cert, server_key = _signed(
        directory, "server", "/CN=localhost", ca=ca, ca_key=ca_key,
        extensions="subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )  # fmt: skip
    client_cert, client_key = _signed(
        directory,
        "client",
        "/CN=prometheus",
        ca=ca,
        ca_key=ca_key,
        extensions="extendedKeyUsage=clientAuth\n",
    )
    return Certificates(ca, server_cert, server_key, client_cert, client_key)


def bcrypt_hash(password: str, cost: int = 4) -> str:
    """A bcrypt hash for basic_auth_users (cost 4 keeps tests fast; use 10 or more for real)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


def web_config_yaml(
    certs: Certificates | None,
    users: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    client_auth: str | None = None,
) -> str:
    """A --web.config.file text; *users* maps names to bcrypt hashes."""
    lines: list[str] = []
    if certs is not None:
        lines += [
            "tls_server_config:",
            f"  cert_file: {certs.server_cert}",
            f"  key_file: {certs.server_key}",
        ]
        if client_auth:
            lines += [f"  client_auth_type: {client_auth}", f"  client_ca_file: {certs.ca}"]
    if users:
        lines += ["basic_auth_users:", *(f"  {u}: '{h}'" for u, h in users.items())]
    if headers:
        lines += ["http_server_config:", "  headers:", *(f"    {k}: '{v}'" for k, v in headers.items())]
    return "\n".join(lines) + "\n"


def make_client_certificate(certs: Certificates, name: str, sans: str) -> tuple[str, str]:
    """Another client certificate signed by *certs*' CA, with subjectAltName *sans* (e.g. "DNS:a,IP:::1")."""
    directory = os.path.dirname(certs.ca)
    return _signed(
        directory, name, f"/CN={name}", ca=certs.ca, ca_key=os.path.join(directory, "ca.key"),
        extensions=f"subjectAltName={sans}\nextendedKeyUsage=clientAuth\n",
    )  # fmt: skip
