"""Basic auth: bcrypt, the same time for unknown users and wrong passwords, malformed headers."""

from __future__ import annotations

import base64
import statistics
import time

from hypothesis import given
from hypothesis import strategies as st

from retransmon.export.auth import BCRYPT_MAX_PASSWORD, BasicAuth, parse_basic
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


def _median_seconds(auth: BasicAuth, user: str, password: str, rounds: int = 9) -> float:
    times = []
    for i in range(rounds):
        started = time.perf_counter()
        assert not auth.check(user, f"{password}{i}")  # a new password each time: never cached
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def test_unknown_user_takes_as_long_as_a_wrong_password() -> None:
    # Cost 8: about 15 ms, well above timer noise, so a skipped bcrypt would show.
    auth = BasicAuth({"prom": bcrypt_hash("s3cret", cost=8).encode()})
    wrong = _median_seconds(auth, "prom", "wrong")
    unknown = _median_seconds(auth, "nobody", "wrong")
    overlong = _median_seconds(auth, "nobody", "w" * 100)
    assert wrong > 0.002
    for other in (unknown, overlong):
        assert 0.6 < other / wrong < 1.6, (wrong, unknown, overlong)


def test_dummy_hash_has_the_cost_of_the_real_ones() -> None:
    auth = BasicAuth({"a": bcrypt_hash("x", cost=6).encode()})
    assert auth._dummy.startswith(b"$2b$06$")


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
