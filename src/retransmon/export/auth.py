"""HTTP basic auth against bcrypt hashes, taking as long for an unknown user as for a wrong password.

An unknown user's password is checked against a dummy hash of the same cost as
the real ones, so response times do not tell which user names exist. bcrypt
runs one at a time (it is meant to be slow: a flood of bad passwords must not
take every core), and a successful check is remembered so that a scraper
presenting the same credentials every 15 s does not pay for bcrypt each time.
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


class BasicAuth:
    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = dict(users)
        costs = [bcrypt_cost(h) or 10 for h in users.values()] or [10]
        self._dummy = bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds=max(costs)))
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
        key = hashlib.sha256(user.encode() + b"\0" + digest + b"\0" + secret).digest()
        with self._cache_lock:
            if key in self._good:
                self._good.move_to_end(key)
                return True
        with self._bcrypt_lock:
            if len(secret) > BCRYPT_MAX_PASSWORD:
                # Still spend the time: a long password must not answer faster.
                bcrypt.checkpw(b"", digest)
                return False
            ok = bcrypt.checkpw(secret, digest) and known
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
