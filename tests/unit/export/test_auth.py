"""Basic auth: bcrypt on first use and cached, as much bcrypt for unknown users, malformed headers."""

from __future__ import annotations

import base64

import bcrypt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from retransmon.export import auth as auth_module
from retransmon.export.auth import BCRYPT_MAX_PASSWORD, BasicAuth, parse_basic
from retransmon.export.webconfig import bcrypt_cost, parse
from tests.support.tls import bcrypt_hash


def _header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_right_and_wrong_credentials() -> None:
    auth = BasicAuth({"prom": bcrypt_hash("s3cret").encode()})
    assert auth.check("prom", "s3cret")
    assert auth.check("prom", "s3cret")  # from the cache
    assert not auth.check("prom", "S3cret")
    assert not auth.check("prom", "")
    assert not auth.check("nobody", "s3cret")
    assert not auth.check("", "")
    assert auth.check_header(_header("prom", "s3cret"))
    assert not auth.check_header(_header("prom", "nope"))
    assert not auth.check_header(None)


def test_password_with_colon_and_unicode() -> None:
    auth = BasicAuth({"ü": bcrypt_hash("a:b:ç").encode()})
    assert auth.check_header(_header("ü", "a:b:ç"))
    assert not auth.check_header(_header("ü", "a:b"))


def test_overlong_password_is_refused_not_truncated() -> None:
    password = "x" * BCRYPT_MAX_PASSWORD
    auth = BasicAuth({"u": bcrypt_hash(password).encode()})
    assert auth.check("u", password)
    assert not auth.check("u", password + "y")  # bcrypt would ignore the 73rd byte


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Every (password, hash) that BasicAuth hands to bcrypt.checkpw, which still runs."""
    calls: list[tuple[bytes, bytes]] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        calls.append((password, hashed))
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    return calls


def test_unknown_user_costs_the_same_bcrypt_as_a_wrong_password(
    bcrypt_calls: list[tuple[bytes, bytes]],
) -> None:
    # Response time cannot tell users apart if each refusal runs bcrypt once at the same cost.
    # Counted, not timed: a busy machine cannot make this fail.
    real = bcrypt_hash("s3cret", cost=5).encode()
    auth = BasicAuth({"prom": real, "other": bcrypt_hash("x", cost=4).encode()})
    hashes = {}
    for name, user, password in (
        ("wrong password", "prom", "wrong"),
        ("unknown user", "nobody", "wrong"),
        ("overlong password", "nobody", "w" * 100),
        ("overlong, known user", "prom", "w" * 100),
    ):
        bcrypt_calls.clear()
        assert not auth.check(user, password)
        assert not auth.check(user, password)  # a refusal is never cached: bcrypt runs again
        assert len(bcrypt_calls) == 2, name
        hashes[name] = {hashed for _, hashed in bcrypt_calls}
    assert hashes["wrong password"] == hashes["overlong, known user"] == {real}
    dummy = hashes["unknown user"]
    assert hashes["overlong password"] == dummy != {real}
    # The dummy hash has the highest cost of the real ones, so an unknown user is never cheaper.
    assert {bcrypt_cost(h) for h in dummy} == {5}
    bcrypt_calls.clear()
    assert auth.check("prom", "s3cret")
    assert auth.check("prom", "s3cret")  # the cache: one bcrypt for two checks
    assert len(bcrypt_calls) == 1


class BcryptCalls:
    """Counts bcrypt checks and the cost each one paid, instead of timing them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.costs: list[int] = []
        real = auth_module.check_password

        def counted(password: bytes, digest: bytes) -> bool:
            self.costs.append(int(digest[4:6]))
            return real(password, digest)

        monkeypatch.setattr(auth_module, "check_password", counted)

    def take(self) -> list[int]:
        costs, self.costs = self.costs, []
        return costs


def test_right_password_is_checked_once_then_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = BcryptCalls(monkeypatch)
    auth = BasicAuth({"prom": bcrypt_hash("s3cret").encode(), "other": bcrypt_hash("x").encode()})
    assert auth.check("prom", "s3cret")
    assert calls.take() == [4]
    for _ in range(3):
        assert auth.check("prom", "s3cret")
    assert calls.take() == []
    # A wrong password never hits the cache, nor the right password under another user.
    for user, password in (
        ("prom", "s3creT"),
        ("prom", "s3cret "),
        ("other", "s3cret"),
        ("nobody", "s3cret"),
    ):
        assert not auth.check(user, password)
        assert calls.take() == [4], (user, password)
    assert not auth.check("prom", "s3creT")
    assert calls.take() == [4]  # failures are not cached either


def test_cost_18_hash_does_not_delay_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # A cost-18 hash takes seconds; start-up must not compute it (nor any hash above cost 4).
    costly = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).replace(b"$2b$04$", b"$2b$18$")
    hashed: list[bytes] = []
    real_hashpw = bcrypt.hashpw

    def recorded(password: bytes, salt: bytes) -> bytes:
        hashed.append(salt[:7])
        return real_hashpw(password, salt)

    monkeypatch.setattr(bcrypt, "hashpw", recorded)
    monkeypatch.setattr(bcrypt, "checkpw", lambda *_: pytest.fail("bcrypt.checkpw at start-up"))
    config = parse(f"basic_auth_users:\n  prom: '{costly.decode()}'\n")
    auth = BasicAuth(config.users)
    assert set(hashed) <= {b"$2b$04$"}
    assert auth._dummy.startswith(b"$2b$18$") and len(auth._dummy) == 60


def test_dummy_hash_has_the_highest_configured_cost() -> None:
    auth = BasicAuth({"a": bcrypt_hash("x", cost=6).encode(), "b": bcrypt_hash("x", cost=5).encode()})
    assert auth._dummy.startswith(b"$2b$06$")
    assert BasicAuth({})._dummy.startswith(b"$2b$10$")


@given(st.text(max_size=200))
def test_parse_basic_never_raises(header: str) -> None:
    result = parse_basic(header)
    assert result is None or (isinstance(result[0], str) and isinstance(result[1], str))


@given(st.text(max_size=40).filter(lambda u: ":" not in u), st.text(max_size=40))
def test_parse_basic_round_trip(user: str, password: str) -> None:
    assert parse_basic(_header(user, password)) == (user, password)


def test_parse_basic_malformed() -> None:
    assert parse_basic("Bearer abc") is None
    assert parse_basic("Basic") is None
    assert parse_basic("Basic !!!") is None
    assert parse_basic("Basic " + base64.b64encode(b"no-colon").decode()) is None
    assert parse_basic("Basic " + base64.b64encode(b"\xff\xfe:x").decode()) is None
    assert parse_basic("basic " + base64.b64encode(b"u:p").decode()) == ("u", "p")
