"""HTTP basic auth against bcrypt hashes, as exporter-toolkit does it.

Nothing is hashed at start-up, whatever the cost (a cost-18 hash takes seconds):
a hash is checked on first use, and a successful check is remembered under a
key made of the user, the hash and the password, so that a wrong password can
never hit the cache and a scraper presenting the same credentials every 15 s
does not pay for bcrypt each time. An unknown user's password is checked
against a dummy hash of the highest configured cost, so the answer takes as
long as for a user that exists. bcrypt runs one at a time (it is meant to be
slow: a flood of bad passwords must not take every core).
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import threading

import bcrypt

from retransmon.export.webconfig import bcrypt_cost

BCRYPT_MAX_PASSWORD = 72  # bytes bcrypt looks at; longer passwords are refused, as in Go's bcrypt
CACHE_SIZE = 256
DEFAULT_COST = 10  # exporter-toolkit's dummy hash has cost 10


def dummy_hash(cost: int) -> bytes:
    """A hash of *cost* that no password matches, made without hashing: a fresh salt, a made-up digest.

    Checking a password against it costs as much as against a real hash of that cost.
    """
    return bcrypt.gensalt(rounds=cost) + b"." * 31


def check_password(password: bytes, digest: bytes) -> bool:
    """One bcrypt check (the slow part; tests count these calls)."""
    return bcrypt.checkpw(password, digest)


class BasicAuth:
    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = dict(users)
        cost = max((bcrypt_cost(h) or DEFAULT_COST for h in users.values()), default=DEFAULT_COST)
        self._dummy = dummy_hash(cost)
        self._bcrypt_lock = threading.Lock()  # one bcrypt at a time
        self._cache_lock = threading.Lock()
        self._good: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def check_header(self, header: str | None) -> bool:
        """Whether an Authorization header carries a known user and that user's password."""
        credentials = parse_basic(header)
        if credentials is None:
            return False
        return self.check(*credentials)

    def check(self, user: str, password: str) -> bool:
        hashed = self._users.get(user)
        known = hashed is not None
        digest = hashed if hashed is not None else self._dummy
        secret = password.encode()
        key = hashlib.sha256(b"\0".join((user.encode(), digest, secret))).digest()
        with self._cache_lock:
            if key in self._good:
                self._good.move_to_end(key)
                return True
        with self._bcrypt_lock:
            if len(secret) > BCRYPT_MAX_PASSWORD:
                # Still spend the time: a long password must not answer faster.
                check_password(b"", digest)
                return False
            ok = check_password(secret, digest) and known
        if ok:
            with self._cache_lock:
                self._good[key] = None
                while len(self._good) > CACHE_SIZE:
                    self._good.popitem(last=False)
        return ok


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from ``Basic base64(user:password)``; None if absent or malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password
