"""Login throttling in Redis: growing delays per (account, IP), per IP and per account, without lock-outs.

The login route calls :meth:`LoginThrottle.check` before it verifies the password (a
:class:`LoginThrottled` becomes a 429 with ``Retry-After``), then :meth:`LoginThrottle.failed` or
:meth:`LoginThrottle.succeeded`. Nothing is ever locked for good: every refusal is a wait that ends.

Policy (N = ``login_max_failures_per_account_ip``, M = ``login_max_failures_per_ip``,
S = ``login_account_soft_limit``, cap = ``login_max_delay_seconds``). A "delay of k" is
``min(2**k, cap)`` seconds: 2, 4, 8, ... counted from the failure that set it.

- **Per (account, IP) pair** (guessing one password from one place): from the N-th failure of the pair,
  the pair must wait a delay of ``failures - N + 1`` before its next try, so the try right after the N-th
  failure gets a 429. The pair's count is forgotten a day after its last failure, and at once by a success.
- **Per IP, over all accounts** (credential stuffing): from the M-th failure from one IP within an hour,
  that IP must wait a delay of ``failures - M + 1`` before any login.
- **Per account, over all IPs** (a distributed attack on one account): from the S-th failure on one
  account within an hour, IPs that have *not* signed in to it in the last 30 days must wait a delay of
  ``failures - S + 1``, shared by all of them; IPs that have (kept by :meth:`succeeded`) are not held by it.
  So an attacker spread over many addresses gets one guess per delay while the real user, from a place they
  used before, signs in at once; from a new place they sign in at once too while the account is below S.

When a try is let through while a counter is at or past its threshold, the matching delay is set again at
once (a hold), so concurrent requests can't all slip through the same opening: one try per delay.
Below the thresholds, concurrent tries are bounded by the per-IP request rate limit.

Keys live under ``freqfleet:login:`` and all expire (counters after their window, delays when they end,
the known IPs 30 days after the last sign-in). The email is normalised (stripped, lower case) and only its
SHA-256 appears in key names; IPv6 addresses count per /64 (see ``ratelimit.client_ip_key``).

**Redis down: fail closed.** Unlike the request rate limits, Redis errors propagate: without the throttle
passwords could be guessed at full speed, so the login route should answer 503 rather than go on.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from management_server.config import ManagementSettings
from management_server.security.ratelimit import client_ip_key

KEY_PREFIX = "freqfleet:login"
PAIR_MEMORY_SECONDS = 24 * 3600
WINDOW_SECONDS = 3600
KNOWN_IP_SECONDS = 30 * 24 * 3600
KNOWN_IPS_KEPT = 20

# KEYS: 1 pair failures, 2 pair delay, 3 IP failures, 4 IP delay, 5 account failures,
#       6 account delay (for unknown IPs), 7 account's known IPs
# ARGV: 1 ip, 2 known-since timestamp, 3 N, 4 M, 5 S, 6 cap in ms
_COMMON_LUA = """
local cap_ms = tonumber(ARGV[6])
local function delay_ms(excess)
    return math.floor(math.min(1000 * 2 ^ math.min(excess, 40), cap_ms))
end
local function count(key)
    return tonumber(redis.call('GET', key) or '0')
end
local score = redis.call('ZSCORE', KEYS[7], ARGV[1])
local known = score and tonumber(score) >= tonumber(ARGV[2])
local max_pair, max_ip, soft = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
"""

_CHECK_LUA = (
    _COMMON_LUA
    + """
local wait = math.max(redis.call('PTTL', KEYS[2]), redis.call('PTTL', KEYS[4]))
if not known then
    wait = math.max(wait, redis.call('PTTL', KEYS[6]))
end
if wait > 0 then
    return wait
end
-- Let this try through; at or past a threshold, hold the next one back until the delay ends again.
local pair = count(KEYS[1])
if pair >= max_pair then
    redis.call('SET', KEYS[2], '1', 'PX', delay_ms(pair - max_pair + 1))
end
local ip = count(KEYS[3])
if ip >= max_ip then
    redis.call('SET', KEYS[4], '1', 'PX', delay_ms(ip - max_ip + 1))
end
local account = count(KEYS[5])
if account >= soft and not known then
    redis.call('SET', KEYS[6], '1', 'PX', delay_ms(account - soft + 1))
end
return 0
"""
)

# ARGV (after the common ones): 7 pair memory in s, 8 window in s
_FAILED_LUA = (
    _COMMON_LUA
    + """
local function bump(key, ttl, sliding)
    local n = redis.call('INCR', key)
    if sliding or redis.call('TTL', key) < 0 then
        redis.call('EXPIRE', key, ttl)
    end
    return n
end
local window = tonumber(ARGV[8])
local pair = bump(KEYS[1], tonumber(ARGV[7]), true)
if pair >= max_pair then
    redis.call('SET', KEYS[2], '1', 'PX', delay_ms(pair - max_pair + 1))
end
local ip = bump(KEYS[3], window, false)
if ip >= max_ip then
    redis.call('SET', KEYS[4], '1', 'PX', delay_ms(ip - max_ip + 1))
end
local account = bump(KEYS[5], window, false)
if account >= soft then
    redis.call('SET', KEYS[6], '1', 'PX', delay_ms(account - soft + 1))
end
return pair
"""
)


class LoginThrottled(Exception):
    """This login must wait ``retry_after`` seconds (answer 429 with ``Retry-After``)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"login throttled: try again in {retry_after} s")
        self.retry_after = retry_after


def normalize_email(email: str) -> str:
    return email.strip().lower()


def email_digest(email: str) -> str:
    """SHA-256 of the normalised email: what key names carry instead of the address."""
    return hashlib.sha256(normalize_email(email).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Keys:
    pair_failures: str
    pair_delay: str
    ip_failures: str
    ip_delay: str
    account_failures: str
    account_delay: str
    known_ips: str

    def all(self) -> list[str]:
        return [
            self.pair_failures,
            self.pair_delay,
            self.ip_failures,
            self.ip_delay,
            self.account_failures,
            self.account_delay,
            self.known_ips,
        ]


class LoginThrottle:
    def __init__(self, redis: aioredis.Redis, settings: ManagementSettings) -> None:
        self._redis = redis
        self._max_pair = settings.login_max_failures_per_account_ip
        self._max_ip = settings.login_max_failures_per_ip
        self._soft = settings.login_account_soft_limit
        self._cap_ms = settings.login_max_delay_seconds * 1000
        self._check = redis.register_script(_CHECK_LUA)
        self._failed = redis.register_script(_FAILED_LUA)

    @staticmethod
    def _keys(email: str, ip: str) -> tuple[_Keys, str]:
        account = f"{KEY_PREFIX}:account:{email_digest(email)}"
        ip_id = client_ip_key(ip)
        keys = _Keys(
            pair_failures=f"{account}:ip:{ip_id}:failures",
            pair_delay=f"{account}:ip:{ip_id}:delay",
            ip_failures=f"{KEY_PREFIX}:ip:{ip_id}:failures",
            ip_delay=f"{KEY_PREFIX}:ip:{ip_id}:delay",
            account_failures=f"{account}:failures",
            account_delay=f"{account}:delay-unknown-ips",
            known_ips=f"{account}:known-ips",
        )
        return keys, ip_id

    def _args(self, ip_id: str) -> list[str | int | float]:
        return [ip_id, time.time() - KNOWN_IP_SECONDS, self._max_pair, self._max_ip, self._soft, self._cap_ms]

    async def check(self, email: str, ip: str) -> None:
        """Raise :class:`LoginThrottled` when a login to ``email`` from ``ip`` must wait; call it before
        verifying the password."""
        keys, ip_id = self._keys(email, ip)
        wait_ms = int(await self._check(keys=keys.all(), args=self._args(ip_id)))
        if wait_ms > 0:
            raise LoginThrottled(max(1, math.ceil(wait_ms / 1000)))

    async def failed(self, email: str, ip: str) -> None:
        """Record a wrong password (or an unknown account: count it the same, so nothing tells them apart)."""
        keys, ip_id = self._keys(email, ip)
        await self._failed(keys=keys.all(), args=[*self._args(ip_id), PAIR_MEMORY_SECONDS, WINDOW_SECONDS])

    async def succeeded(self, email: str, ip: str) -> None:
        """Clear the pair's failures and delay, and remember ``ip`` as one this account signs in from."""
        keys, ip_id = self._keys(email, ip)
        now = time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.pair_failures, keys.pair_delay)
            pipe.zadd(keys.known_ips, {ip_id: now})
            pipe.zremrangebyscore(keys.known_ips, "-inf", now - KNOWN_IP_SECONDS)
            pipe.zremrangebyrank(keys.known_ips, 0, -(KNOWN_IPS_KEPT + 1))
            pipe.expire(keys.known_ips, KNOWN_IP_SECONDS)
            await pipe.execute()
