"""API-key authentication and tenant scoping for the gRPC server.

Keys travel in the ``x-api-key`` call metadata (``authorization: Bearer <key>`` is accepted
too). Each key maps to a principal: an admin, or a set of tenant names. Keys are never
hard-coded: they come from a JSON key file (``--auth-file`` / ``VECDB_AUTH_FILE``) or from
the ``VECDB_API_KEYS`` environment variable holding the same JSON. The format::

    {"keys": [
      {"name": "ops",      "role": "admin",       "sha256": "<hex sha256 of the key>"},
      {"name": "acme-app", "tenants": ["acme"],   "key_env": "ACME_API_KEY"},
      {"name": "beta-app", "tenants": ["beta"],   "key": "<the key itself; keep the file private>"}
    ]}

Each entry gives exactly one of ``sha256`` (preferred: the file then holds no secret;
``python -m vecdb.server --hash-key`` prints the digest of a key read from stdin),
``key_env`` (name of an environment variable holding the key) or ``key``.

Presented keys are hashed with SHA-256 and compared with every stored digest using
``hmac.compare_digest`` without stopping at the first match, so the time taken does not
depend on which key, or how much of one, matched.

Tenant scoping (what a tenant key may do) is decided here, in ``Principal``; the service
applies it to every request whatever the request says.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from vecdb.errors import InvalidArgumentError, PermissionDeniedError, UnauthenticatedError
from vecdb.wire import API_KEY_HEADER, AUTHORIZATION_HEADER, BEARER_PREFIX

logger = logging.getLogger(__name__)

AUTH_FILE_ENV = "VECDB_AUTH_FILE"
API_KEYS_ENV = "VECDB_API_KEYS"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin, or a key limited to ``tenants``."""

    name: str
    admin: bool
    tenants: frozenset[str] = field(default_factory=frozenset)

    def require_admin(self, action: str) -> None:
        """PermissionDeniedError unless this is an admin key."""
        if not self.admin:
            raise PermissionDeniedError(f"{action} needs an admin API key; key {self.name!r} is limited to tenants")

    def _served(self) -> str:
        return ", ".join(sorted(self.tenants)) or "(none)"

    def scope_tenant(self, requested: str | None) -> str | None:
        """The tenant a read/delete runs under: as asked for admins; for a tenant key the
        asked tenant if it is one of its own, else its single tenant when none is asked."""
        if self.admin:
            return requested
        if requested is not None:
            if requested not in self.tenants:
                raise PermissionDeniedError(
                    f"API key {self.name!r} may not access tenant {requested!r}; it serves: {self._served()}"
                )
            return requested
        if len(self.tenants) == 1:
            return next(iter(self.tenants))
        raise InvalidArgumentError(
            f"API key {self.name!r} serves several tenants ({self._served()}); pass tenant= to choose one"
        )

    def scope_tenants(self, requested: Sequence[str]) -> list[str]:
        """The tenants an upsert assigns: as asked for admins; for a tenant key, only its
        own tenants (its single tenant when none is asked)."""
        if self.admin:
            return list(requested)
        if not requested:
            scoped = self.scope_tenant(None)
            return [] if scoped is None else [scoped]
        for name in requested:
            self.scope_tenant(name)
        return list(requested)

    def visible_tenants(self, names: Iterable[str]) -> list[str]:
        """Filter tenant names down to those this key may see."""
        return list(names) if self.admin else [n for n in names if n in self.tenants]


OPEN_ACCESS = Principal("anonymous", admin=True)


def hash_key(key: str) -> str:
    """Hex SHA-256 digest of an API key, as stored under ``sha256`` in a key file."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyRing:
    """The known API keys (as SHA-256 digests) and the principal each one maps to."""

    def __init__(self, entries: Sequence[tuple[bytes, Principal]]) -> None:
        if not entries:
            raise InvalidArgumentError("an auth config must list at least one key")
        self._entries = tuple(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, metadata: Iterable[tuple[str, Any]] | None) -> Principal:
        """Return the principal of the key in the call metadata; UnauthenticatedError if
        there is no key or it is unknown."""
        presented = extract_key(metadata)
        if presented is None:
            raise UnauthenticatedError(
                f"missing API key: send it in the {API_KEY_HEADER!r} call metadata "
                "(vecdb.connect(address, api_key=...))"
            )
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        found: Principal | None = None
        for stored, principal in self._entries:
            if hmac.compare_digest(stored, digest):
                found = principal
        if found is None:
            raise UnauthenticatedError("unknown API key: check the key, or ask the server admin for one")
        return found

    @classmethod
    def from_config(cls, config: Mapping[str, Any], environ: Mapping[str, str]) -> "KeyRing":
        """Build from the parsed JSON config (see module docstring)."""
        keys = config.get("keys") if isinstance(config, Mapping) else None
        if not isinstance(keys, list):
            raise InvalidArgumentError('auth config must be a JSON object with a "keys" list')
        entries = [_entry(i, item, environ) for i, item in enumerate(keys)]
        digests = [d for d, _ in entries]
        if len(set(digests)) != len(digests):
            raise InvalidArgumentError("auth config lists the same key twice")
        return cls(entries)


def _entry(i: int, item: Any, environ: Mapping[str, str]) -> tuple[bytes, Principal]:
    """One key-file entry as (digest, principal)."""
    if not isinstance(item, Mapping):
        raise InvalidArgumentError(f"auth key #{i} must be an object")
    name = str(item.get("name", f"key-{i}"))
    given = [k for k in ("sha256", "key_env", "key") if k in item]
    if len(given) != 1:
        raise InvalidArgumentError(f"auth key {name!r} must give exactly one of sha256, key_env, key")
    if "sha256" in item:
        try:
            digest = bytes.fromhex(str(item["sha256"]))
        except ValueError:
            raise InvalidArgumentError(f"auth key {name!r}: sha256 is not hex") from None
        if len(digest) != 32:
            raise InvalidArgumentError(f"auth key {name!r}: sha256 must be 64 hex digits")
    else:
        secret = environ.get(str(item["key_env"])) if "key_env" in item else str(item["key"])
        if not secret:
            raise InvalidArgumentError(f"auth key {name!r}: environment variable {item['key_env']!r} is unset or empty")
        digest = hashlib.sha256(secret.encode("utf-8")).digest()
    role = item.get("role", "tenant")
    tenants = item.get("tenants", [])
    if role == "admin":
        return digest, Principal(name, admin=True)
    if role != "tenant" or not isinstance(tenants, list) or not tenants or not all(isinstance(t, str) for t in tenants):
        raise InvalidArgumentError(
            f'auth key {name!r} needs "role": "admin" or a non-empty "tenants" list of names'
        )
    return digest, Principal(name, admin=False, tenants=frozenset(tenants))


def extract_key(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The API key in call metadata (``x-api-key``, or ``authorization: Bearer``), if any."""
    for key, value in metadata or ():
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if key == API_KEY_HEADER and text:
            return text
        if key == AUTHORIZATION_HEADER and text.lower().startswith(BEARER_PREFIX) and text[len(BEARER_PREFIX):].strip():
            return text[len(BEARER_PREFIX):].strip()
    return None


def load_keyring(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> KeyRing | None:
    """Load keys from ``path``, else ``$VECDB_AUTH_FILE``, else ``$VECDB_API_KEYS`` (JSON);
    None when none is configured (the server then runs open)."""
    env = os.environ if environ is None else environ
    source = path or env.get(AUTH_FILE_ENV)
    if source:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read auth file {str(source)!r}: {exc.strerror}") from None
        origin = str(source)
    elif env.get(API_KEYS_ENV):
        text, origin = env[API_KEYS_ENV], f"${API_KEYS_ENV}"
    else:
        return None
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise InvalidArgumentError(f"auth config {origin} is not valid JSON: {exc}") from None
    ring = KeyRing.from_config(config, env)
    logger.info("loaded API keys", extra={"event": "auth_loaded", "source": origin, "n_keys": len(ring)})
    return ring
