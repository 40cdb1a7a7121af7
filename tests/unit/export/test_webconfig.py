"""--web.config.file: the exporter-toolkit format, validated at start-up with one-line errors."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from retransmon.cli import main
from retransmon.errors import UsageError
from retransmon.export.goyaml import Problem
from retransmon.export.webconfig import bcrypt_cost, load, parse
from tests.support.tls import Certificates, bcrypt_hash, web_config_yaml


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return str(path)


def test_empty_file_means_plain_http(tmp_path: Path) -> None:
    config = load(_write(tmp_path, ""))
    assert config.tls is None and config.context is None and config.users == {} and config.headers == {}


def test_full_config_loads(tmp_path: Path, certs: Certificates) -> None:
    text = web_config_yaml(
        certs,
        users={"prom": bcrypt_hash("secret")},
        headers={"X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=31536000"},
        client_auth="RequireAndVerifyClientCert",
    )
    config = load(_write(tmp_path, text))
    assert config.tls is not None
    assert config.tls.client_auth_type == "RequireAndVerifyClientCert"
    assert config.context is not None
    assert config.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert config.context.verify_mode == ssl.CERT_REQUIRED
    assert set(config.users) == {"prom"}
    assert config.headers["X-Frame-Options"] == "deny"


def test_relative_paths_are_relative_to_the_file(tmp_path: Path, certs: Certificates) -> None:
    (tmp_path / "s.crt").write_bytes(Path(certs.server_cert).read_bytes())
    (tmp_path / "s.key").write_bytes(Path(certs.server_key).read_bytes())
    config = load(_write(tmp_path, "tls_server_config:\n  cert_file: s.crt\n  key_file: s.key\n"))
    assert config.tls is not None and config.tls.cert_file == str(tmp_path / "s.crt")
    assert config.context is not None


def test_tls13_minimum(tmp_path: Path, certs: Certificates) -> None:
    text = web_config_yaml(certs) + "  min_version: TLS13\n"
    config = load(_write(tmp_path, text))
    assert config.context is not None and config.context.minimum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("tls_server_config: [1, 2]\n", "must be a mapping"),
        ("bogus: 1\n", "unknown key 'bogus'"),
        ("tls_server_config:\n  cert_file: a.crt\n", "missing key_file"),
        ("tls_server_config:\n  key_file: a.key\n", "missing cert_file"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  ciphers: x\n", "unknown key 'ciphers'"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS11\n", "RFC 8996"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n", "RFC 8996"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: SSL3\n", "not one of TLS10"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n", "NoClientCert"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
            "not supported",
        ),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Maybe\n", "is not one of"),
        # The security defect: empty certificate paths and a bogus client_auth_type never mean plain HTTP.
        (
            "tls_server_config:\n  cert_file: ''\n  key_file: ''\n  client_auth_type: Bogus\n",
            "client_auth_type 'Bogus'",
        ),
        ("tls_server_config:\n  cert_file: ''\n  key_file: ''\n", "no certificate"),
        ("tls_server_config:\n  min_version: TLS13\n", "no certificate"),
        ("tls_server_config:\n  cert_file: a\n  cert: b\n  key_file: c\n", "both cert and cert_file"),
        ("tls_server_config:\n  cert: a\n  key: b\n  key_file: c\n", "both key and key_file"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: VerifyClientCertIfGiven\n"
            "  client_ca: x\n  client_ca_file: y\n",
            "both client_ca and client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [RC4]\n",
            "unknown cipher 'RC4'",
        ),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: x\n", "must be a list"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [P256]\n", "unknown curve"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [X25519, CurveP256]\n",
            "more than one curve",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  prefer_server_cipher_suites: 'true'\n",
            "true or false",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_allowed_sans: [x]\n",
            "needs client_auth_type RequireAndVerifyClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n"
            "  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: []\n",
            "no client could connect",
        ),
        ("tls_server_config:\n  cert_file: a\n  cert_file: b\n", "given twice"),
        ("rate_limit:\n  interval: 1s\n  burst: 0\n", "every request would be refused"),
        ("rate_limit:\n  interval: soon\n  burst: 1\n", "not a duration"),
        ("rate_limit:\n  interval: 1s\n  burst: '3'\n", "whole number"),
        ("rate_limit:\n  every: 1s\n", "unknown key 'every'"),
        ("basic_auth_users: [a]\n", "mapping of user name"),
        ("basic_auth_users:\n  prom: plaintext\n", "not a bcrypt hash"),
        ("basic_auth_users:\n  prom: '$2b$10$tooshort'\n", "not a bcrypt hash"),
        ("basic_auth_users:\n  prom: '$2b$03$" + "x" * 53 + "'\n", "cost '03'"),
        ("basic_auth_users:\n  prom: '$3b$10$" + "x" * 53 + "'\n", "unknown prefix"),
        ("basic_auth_users:\n  prom: '$2b$10$" + "x" * 54 + "'\n", "no password can match"),
        ("basic_auth_users:\n  prom: '$2$10$" + "x" * 54 + "'\n", "no password can match"),
        ("http_server_config:\n  headers:\n    Server: nginx\n", "'Server' can not be configured"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "not one of deny, sameorigin"),
        ("http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n", "not one of nosniff"),
        ("http_server_config:\n  http2: maybe\n", "true or false"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: ''\n", "not one of deny, sameorigin"),
        ("http_server_config:\n  headers:\n    x-frame-options: deny\n", "can not be configured"),
        ("http_server_config:\n  extra: 1\n", "unknown key 'extra'"),
        ("tls_server_config:\n  cert_file: [unclosed\n", "YAML error at line"),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_invalid_configs_are_one_line_usage_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load(path)
    message = info.value.render()
    assert needle in message
    assert message.startswith(f"--web.config.file {path}: ")
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        load(str(tmp_path / "nope.yml"))


def test_missing_certificate_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "tls_server_config:\n  cert_file: gone.crt\n  key_file: gone.key\n")
    with pytest.raises(UsageError, match=r"cannot read .*gone\.crt"):
        load(path)


def test_key_not_matching_certificate(tmp_path: Path, certs: Certificates) -> None:
    text = f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.client_key}\n"
    with pytest.raises(UsageError, match="cannot load the certificate") as info:
        load(_write(tmp_path, text))
    assert "\n" not in info.value.render()


def test_garbage_client_ca(tmp_path: Path, certs: Certificates) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    text = (
        web_config_yaml(certs) + f"  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {garbage}\n"
    )
    with pytest.raises(UsageError, match="cannot load client_ca_file"):
        load(_write(tmp_path, text))


def test_serve_with_invalid_config_exits_2_before_loading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "basic_auth_users:\n  prom: plaintext\n")
    code = main(["serve", "--listen", "127.0.0.1:1", "--web.config.file", path])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a bcrypt hash" in err[0]


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_bcrypt_variants_accepted(prefix: str) -> None:
    digest = bcrypt_hash("pw").replace("$2b$", prefix, 1)
    config = parse(f"basic_auth_users:\n  u: '{digest}'\n")
    assert config.users["u"] == digest.encode()


@pytest.mark.parametrize(
    ("digest", "cost"),
    [
        (b"$2b$12$" + b"a" * 53, 12),
        (b"$2y$04$" + b"a" * 53, 4),
        (b"$2b$03$" + b"a" * 53, None),
        (b"$2b$32$" + b"a" * 53, None),
        (b"$2x$10$" + b"a" * 53, 10),
        (b"$2$10$" + b"a" * 54, None),
        (b"$2b$10$" + b"a" * 52, None),
        (b"2b$10$" + b"a" * 53, None),
        (b"", None),
    ],
)
def test_bcrypt_cost(digest: bytes, cost: int | None) -> None:
    assert bcrypt_cost(digest) == cost


_SCALARS = st.one_of(
    st.text(max_size=12),
    st.integers(),
    st.booleans(),
    st.none(),
    st.sampled_from(["TLS12", "TLS10", "X25519", "deny", "1s", "$2b$04$" + "a" * 53, "RequestClientCert"]),
)
_KEYS = st.sampled_from(
    ["tls_server_config", "http_server_config", "basic_auth_users", "rate_limit", "cert_file", "cert",
     "key", "client_auth_type", "client_ca", "min_version", "max_version", "cipher_suites",
     "curve_preferences", "client_allowed_sans", "headers", "http2", "X-Frame-Options", "interval",
     "burst", "prefer_server_cipher_suites", "other"]
)  # fmt: skip
_DOCS = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_DOCS)
def test_any_document_is_a_config_or_one_problem(doc: object) -> None:
    # Whatever the structure, parse() answers with a config or a Problem: never another exception.
    try:
        parse(yaml.safe_dump(doc))
    except Problem as exc:
        assert "\n" not in str(exc)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_config_or_one_problem(text: str) -> None:
    try:
        parse(text)
    except Problem as exc:
        assert "\n" not in str(exc)
