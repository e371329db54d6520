"""argon2id password hashing with parameters from settings, and the password policy."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from management_server.config import ManagementSettings

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")


def build_hasher(settings: ManagementSettings) -> PasswordHasher:
    return PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost_kib,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    )


def verify_password(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def password_problems(password: str, email: str | None = None) -> list[str]:
    """What is wrong with a password, in words a person can act on (empty when it is fine).

    NIST SP 800-63B / OWASP ASVS: length 12 to 128, any characters, no composition rules,
    refused when it is a commonly used password or the account's own email.
    """
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    lowered = password.strip().lower()
    if lowered in common_passwords() or len(set(lowered)) <= 2:
        problems.append("the password is too common: choose one that others don't use")
    if email and lowered in {email.strip().lower(), email.strip().lower().split("@")[0]}:
        problems.append("the password must not be your email address")
    return problems
