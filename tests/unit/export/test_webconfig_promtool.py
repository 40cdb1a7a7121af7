"""The oracle: retransmon and the real exporter-toolkit (inside promtool) agree on every generated file.

`promtool check web-config` (Debian's prometheus package, installed by `make setup`)
validates with exporter-toolkit itself. For every generated file, valid and invalid:

* both accept it, or both reject it; or
* promtool accepts and retransmon raises a :class:`Refusal`: a file exporter-toolkit
  takes but this server cannot honour, or one that would give no working TLS server
  (no certificate means plain HTTP there; never here). Each refusal's message must
  carry one of the documented reasons below (docs/deployment.md lists them too).

promtool 2.42's exporter-toolkit (0.8) is older than some keys: inline ``cert``,
``key``, ``client_ca`` (0.9), ``client_allowed_sans`` (0.10) and ``rate_limit``
(0.11) are unknown to it. For those, promtool judges an equivalent file: the inline
PEM written to files and named with ``*_file``, and without ``client_allowed_sans``
and ``rate_limit``; their own rules are checked in test_webconfig.py.
"""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from retransmon.errors import UsageError
from retransmon.export.goyaml import Problem
from retransmon.export.tlscontext import CIPHER_SUITES, CURVES
from retransmon.export.webconfig import Refusal, read
from tests.support.tls import Certificates, bcrypt_hash, make_certificates

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: `make setup` installs it")

# What a refusal may be for; each message names one of these.
REFUSAL_REASONS = (
    "has no certificate",  # exporter-toolkit serves plain HTTP
    "RFC 8996",  # TLS10, TLS11
    "not verified) is not supported",  # RequestClientCert, RequireAnyClientCert
    "more than one curve",  # Python's ssl sets one curve
    "no TLS client could connect",  # the handshake probe failed
    "is below min_version",
    "only TLS 1.3 suites",
    "so no client certificate could be verified",
    "cannot load client_ca",  # Go skips what is not PEM, leaving no CA
    "no password can match this hash",  # Go's bcrypt.Cost passes it, no check ever can
)
# Not in Go's tls.CipherSuites(): insecure ones, OpenSSL's names, an old alias, a typo.
UNKNOWN_CIPHERS = (
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    "tls_aes_128_gcm_sha256",
    "",
)


@dataclass(frozen=True)
class Case:
    text: str  # what retransmon reads
    oracle_text: str | None = None  # what promtool reads, when its toolkit lacks a key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certificates]:
    yield make_certificates(str(tmp_path_factory.mktemp("oracle-certs")))


def _indent(pem: str, spaces: int) -> str:
    return "|\n" + "".join(" " * spaces + line + "\n" for line in pem.strip().splitlines())


def _tls_cases(c: Certificates, garbage: str) -> list[str]:
    """tls_server_config sections (without the key line), valid and not."""
    ok = f"  cert_file: {c.server_cert}\n  key_file: {c.server_key}\n"
    cases = [
        "",
        "tls_server_config:\n",
        "tls_server_config: {}\n",
        "tls_server_config: []\n",
        "tls_server_config: x\n",
        "tls_server_config:\n" + ok,
        f"tls_server_config:\n  cert_file: {c.server_cert}\n",
        f"tls_server_config:\n  key_file: {c.server_key}\n",
        "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
        f"tls_server_config:\n  cert_file: {c.server_cert}\n  key_file: {c.client_key}\n",
        f"tls_server_config:\n  cert_file: {c.server_key}\n  key_file: {c.server_key}\n",
        "tls_server_config:\n  cert_file: ''\n  key_file: ''\n  client_auth_type: Bogus\n",
        "tls_server_config:\n  cert_file: ''\n  key_file: ''\n",
        "tls_server_config:\n  cert_file: ''\n",
        "tls_server_config:\n  min_version: TLS13\n",
        "tls_server_config:\n  prefer_server_cipher_suites: false\n",
        "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n",
        f"tls_server_config:\n  client_ca_file: {c.ca}\n",
        "tls_server_config:\n" + ok + "  bogus: 1\n",
        "tls_server_config:\n" + ok + f"  cert_file: {c.server_cert}\n",
        "tls_server_config:\n" + ok + "  cipher_suites: []\n  curve_preferences: []\n",
        "tls_server_config:\n" + ok + "  cipher_suites: TLS_AES_128_GCM_SHA256\n",
        "tls_server_config:\n" + ok + "  curve_preferences: {a: 1}\n",
    ]
    auths = (
        "",
        "NoClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
        "RequireClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
        "requireandverifyclientcert",
        "Bogus",
    )
    for auth, ca in itertools.product(auths, ("", c.ca, garbage, "/nonexistent-ca.pem")):
        lines = ok + (f"  client_auth_type: '{auth}'\n" if auth else "")
        lines += f"  client_ca_file: {ca}\n" if ca else ""
        cases.append("tls_server_config:\n" + lines)
    versions = ("TLS10", "TLS11", "TLS12", "TLS13", "TLS14", "SSL30", "tls12", "~", "''")
    for low, high in itertools.product((*versions, None), (*versions, None)):
        lines = ok + (f"  min_version: {low}\n" if low else "") + (f"  max_version: {high}\n" if high else "")
        cases.append("tls_server_config:\n" + lines)
    for name in (*CIPHER_SUITES, *UNKNOWN_CIPHERS):
        cases.append("tls_server_config:\n" + ok + f"  cipher_suites: ['{name}']\n")
        cases.append("tls_server_config:\n" + ok + f"  cipher_suites: ['{name}']\n  max_version: TLS12\n")
    cases.append("tls_server_config:\n" + ok + f"  cipher_suites: [{', '.join(CIPHER_SUITES)}]\n")
    for name in (*CURVES, "P256", "X448", "CurveP224", "x25519"):
        cases.append("tls_server_config:\n" + ok + f"  curve_preferences: [{name}]\n")
    for pair in itertools.permutations(CURVES, 2):
        cases.append("tls_server_config:\n" + ok + f"  curve_preferences: [{', '.join(pair)}]\n")
    for value in ("true", "false", "y", "no", "'true'", "1", "~"):
        cases.append("tls_server_config:\n" + ok + f"  prefer_server_cipher_suites: {value}\n")
    return cases


def _http_cases() -> list[str]:
    cases = ["", "http_server_config:\n", "http_server_config: 3\n", "http_server_config:\n  http3: true\n"]
    for value in ("true", "false", "y", "off", "'true'", "1", "~", "[]"):
        cases.append(f"http_server_config:\n  http2: {value}\n")
    headers = {
        "Strict-Transport-Security": ("max-age=31536000", "1", "''", "~", "[a]", "'a\\nb'"),
        "X-Content-Type-Options": ("nosniff", "NoSniff", "''", "1"),
        "X-Frame-Options": ("deny", "sameorigin", "DENY", "allow", "''", "~"),
        "X-XSS-Protection": ("1", "0", "'1; mode=block'", "1.0", "true", "''"),
        "Content-Security-Policy": ("default-src 'self'", "''"),
        "x-frame-options": ("deny",),
        "Server": ("nginx",),
        "Content-Type": ("text/plain",),
    }
    for name, values in headers.items():
        for value in values:
            value_text = f'"{value}"' if "'" in value and not value.startswith("'") else value
            cases.append(f"http_server_config:\n  headers:\n    {name}: {value_text}\n")
    cases.append("http_server_config:\n  headers: [a]\n")
    cases.append("http_server_config:\n  headers:\n")
    return cases


def _user_cases() -> list[str]:
    good = bcrypt_hash("pw")
    hashes = [
        good,
        good.replace("$2b$", "$2a$"),
        good.replace("$2b$", "$2y$"),
        good.replace("$2b$", "$2x$"),
        good.replace("$2b$04$", "$2b$18$"),  # legal; nothing may hash at cost 18 on start-up
        good.replace("$2b$04$", "$2b$31$"),
        good.replace("$2b$04$", "$2b$03$"),
        good.replace("$2b$04$", "$2b$32$"),
        good.replace("$2b$", "$3b$"),
        good.replace("$2b$", "$1$"),
        good.replace("$2b$", "$2$"),
        good[:58],
        good + "x",
        good[:-1] + "!",
        "plaintext",
        "",
    ]
    cases = ["", "basic_auth_users:\n", "basic_auth_users: [a]\n", "basic_auth_users: x\n"]
    cases += [f"basic_auth_users:\n  prom: '{h}'\n" for h in hashes]
    cases += [
        f"basic_auth_users:\n  'a:b': '{good}'\n",
        f"basic_auth_users:\n  1: '{good}'\n",
        "basic_auth_users:\n  prom: ~\n",
        "basic_auth_users:\n  prom: 12\n",
        f"basic_auth_users:\n  prom: '{good}'\n  prom: '{good}'\n",
        f"basic_auth_users:\n  a: '{good}'\n  b: '{good.replace('$2b$04$', '$2b$12$')}'\n",
    ]
    return cases


def _structure_cases() -> list[str]:
    return [
        "",
        "---\n",
        "~\n",
        "- a\n",
        "just a string\n",
        "bogus: 1\n",
        "tls_server_config:\n\tcert_file: x\n",
        "basic_auth_users: {a: [unclosed\n",
        "http_server_config: &h\n  http2: false\nbasic_auth_users: *h\n",
        "http_server_config:\n  http2: false\nhttp_server_config:\n  http2: true\n",
        "http_server_config:\n  http2: false\n---\nbogus: 1\n",
    ]


def _inline_cases(c: Certificates, directory: Path) -> list[Case]:
    """Inline PEM, judged by promtool as the same PEM in files (its toolkit predates `cert:`)."""
    server_cert, server_key = Path(c.server_cert).read_text(), Path(c.server_key).read_text()
    client_key, ca = Path(c.client_key).read_text(), Path(c.ca).read_text()
    cases = []
    variants = [
        (server_cert, server_key, None),
        (server_cert, client_key, None),
        (server_cert, server_key, ca),
        (server_cert, "not a key", None),
    ]
    for i, (cert, key, client_ca) in enumerate(variants):
        files = {name: directory / f"inline{i}.{name}" for name in ("cert", "key", "ca")}
        files["cert"].write_text(cert)
        files["key"].write_text(key)
        files["ca"].write_text(client_ca or "")
        auth = "  client_auth_type: RequireAndVerifyClientCert\n" if client_ca else ""
        inline = f"tls_server_config:\n  cert: {_indent(cert, 4)}  key: {_indent(key, 4)}" + auth
        oracle = f"tls_server_config:\n  cert_file: {files['cert']}\n  key_file: {files['key']}\n" + auth
        if client_ca:
            inline += f"  client_ca: {_indent(client_ca, 4)}"
            oracle += f"  client_ca_file: {files['ca']}\n"
        cases.append(Case(inline, oracle))
        # Mixed: the certificate inline, the key from its file.
        mixed = f"tls_server_config:\n  cert: {_indent(cert, 4)}  key_file: {files['key']}\n" + auth
        cases.append(Case(mixed + (f"  client_ca_file: {files['ca']}\n" if client_ca else ""), oracle))
    return cases


def _newer_key_cases(c: Certificates) -> list[Case]:
    """client_allowed_sans and rate_limit: promtool judges the file without them."""
    base = (
        f"tls_server_config:\n  cert_file: {c.server_cert}\n  key_file: {c.server_key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {c.ca}\n"
    )
    cases = [
        Case(base + f"  client_allowed_sans: {sans}\n", base) for sans in ("[prometheus]", "[a, b]", "~")
    ]
    for interval, burst in (("1s", 10), ("0", 0), ("250ms", 1), ("-1s", 0), ("1m30s", 5), ("3", 1)):
        cases.append(Case(f"rate_limit:\n  interval: {interval}\n  burst: {burst}\n", ""))
    return cases


def _verdict_retransmon(path: str) -> str:
    try:
        read(path)
    except Refusal as exc:
        assert any(reason in str(exc) for reason in REFUSAL_REASONS), exc
        return "refused"
    except (Problem, UsageError):
        return "rejected"
    return "accepted"


def _verdicts_promtool(paths: list[str]) -> dict[str, bool]:
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, "check", "web-config", *paths], capture_output=True, text=True, timeout=120
    )
    output = proc.stdout + proc.stderr
    verdicts: dict[str, bool] = {}
    for line in output.splitlines():
        name, _, rest = line.partition(" ")
        if name in paths and rest.split(":")[0] in ("SUCCESS", "FAILED"):
            verdicts[name] = rest.startswith("SUCCESS")
    assert set(verdicts) == set(paths), output[-2000:]
    return verdicts


def test_retransmon_and_promtool_agree(
    certs: Certificates, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    garbage = tmp_path / "garbage-ca.pem"
    garbage.write_text("not a certificate\n")
    cases = [Case(text) for text in _tls_cases(certs, str(garbage))]
    cases += [Case(text) for text in (*_http_cases(), *_user_cases(), *_structure_cases())]
    cases += _inline_cases(certs, tmp_path)
    cases += _newer_key_cases(certs)
    # And combinations of the sections, drawn with a fixed seed.
    rng = random.Random(13)
    sections = [_tls_cases(certs, str(garbage)), _http_cases(), _user_cases()]
    for _ in range(300):
        cases.append(Case("".join(rng.choice(section) for section in sections)))

    monkeypatch.chdir(tmp_path)  # promtool prints the names as given: keep them short
    ours, theirs = [], []
    for i, case in enumerate(cases):
        ours.append(f"c{i:04d}.yml")
        Path(ours[-1]).write_text(case.text)
        theirs.append(f"o{i:04d}.yml")
        Path(theirs[-1]).write_text(case.text if case.oracle_text is None else case.oracle_text)
    oracle = _verdicts_promtool(theirs)

    tally = {"agree": 0, "refused": 0}
    disagreements = []
    for ours_path, theirs_path, case in zip(ours, theirs, cases, strict=True):
        mine, promtool_ok = _verdict_retransmon(ours_path), oracle[theirs_path]
        if (mine == "accepted") == promtool_ok or (mine == "refused" and not promtool_ok):
            tally["agree"] += 1
        elif mine == "refused" and promtool_ok:
            tally["refused"] += 1
        else:
            disagreements.append(f"{ours_path}: retransmon {mine}, promtool {promtool_ok}:\n{case.text}")
    with capsys.disabled():
        print(f"\npromtool oracle: {len(cases)} files, {tally['agree']} agree, {tally['refused']} refused")
    assert not disagreements, "\n".join(disagreements[:20])
    assert tally["agree"] > 400 and tally["refused"] > 0
