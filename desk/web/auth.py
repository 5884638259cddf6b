"""Who may use the desk: users from configuration, passwords hashed with Argon2,
signed session cookies, CSRF tokens on every form, and optionally an
authenticating proxy's header.

The users file (``LIFECYCLE_DESK_USERS_FILE``)::

    users:
      - name: alice
        role: officer            # may act: holds, extensions, evidence, complaints
        password_hash: $argon2id$v=19$...   # lifecycle desk hash-password
      - name: bob
        role: read-only

With ``LIFECYCLE_DESK_TRUST_PROXY_HEADER`` set, a request from one of
``LIFECYCLE_DESK_TRUSTED_PROXIES`` carrying that header is signed in as the
user it names (no password: the proxy authenticated them); the role is the
users file's, or ``LIFECYCLE_DESK_PROXY_DEFAULT_ROLE`` for names not in it.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import Request

from desk.settings import DeskSettings, Role

ROLES: tuple[Role, ...] = ("read-only", "officer")
CSRF_FIELD = "csrf_token"
_HASHER = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the name is unknown, so a wrong name costs as long as a
    wrong password and response times do not tell which names exist."""
    return _HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


class UsersFileError(ValueError):
    """The users file is missing, unreadable or malformed."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str | None = None

    @property
    def can_act(self) -> bool:
        return self.role == "officer"


class Users:
    def __init__(self, users: list[User]) -> None:
        self.by_name = {u.name: u for u in users}

    @classmethod
    def load(cls, path: Path | None) -> Users:
        if path is None:
            return cls([])
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsersFileError(f"cannot read the users file {path}: {exc}") from exc
        entries = doc.get("users") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise UsersFileError(f"{path}: expected a 'users' list")
        users = []
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise UsersFileError(f"{path}: user #{n + 1} has no name")
            role = entry.get("role")
            if role not in ROLES:
                raise UsersFileError(f"{path}: user #{n + 1} has role {role!r}, not one of {ROLES}")
            password_hash = entry.get("password_hash")
            if password_hash is not None and not str(password_hash).startswith("$argon2"):
                raise UsersFileError(f"{path}: user #{n + 1}: password_hash is not an Argon2 hash")
            users.append(User(entry["name"], cast(Role, role), password_hash))
        return cls(users)

    def authenticate(self, name: str, password: str) -> User | None:
        user = self.by_name.get(name)
        stored = user.password_hash if user is not None else None
        try:
            _HASHER.verify(stored or _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            return None
        return user if stored else None


@dataclass(frozen=True)
class Access:
    users: Users
    settings: DeskSettings

    @property
    def trusted_proxies(self) -> set[str]:
        return {p.strip() for p in self.settings.trusted_proxies.split(",") if p.strip()}

    def current_user(self, request: Request) -> User | None:
        header = self.settings.trust_proxy_header
        if header:
            client = request.client.host if request.client else None
            name = request.headers.get(header)
            if name and client in self.trusted_proxies:
                known = self.users.by_name.get(name)
                if known is not None:
                    return known
                role = self.settings.proxy_default_role
                return User(name, role) if role else None
        name = request.session.get("user")
        if not isinstance(name, str):
            return None
        return self.users.by_name.get(name)


def sign_in(request: Request, user: User) -> None:
    """A fresh session (no fixation): the user and a new CSRF token."""
    request.session.clear()
    request.session["user"] = user.name
    request.session["csrf"] = secrets.token_urlsafe(32)


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, form: Any) -> bool:
    sent = form.get(CSRF_FIELD)
    expected = request.session.get("csrf")
    return (
        isinstance(sent, str)
        and isinstance(expected, str)
        and hmac.compare_digest(sent.encode(), expected.encode())
    )
