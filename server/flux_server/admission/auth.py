"""API keys: a file of hashed keys (a mounted Secret), checked in constant time.

The keys file has one key a line; blank lines and ``#`` comments are ignored::

    # USER  HASH  [PERMISSION,...]
    alice   sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  priority
    bob     sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752

* ``USER`` names the caller in the audit log (letters, digits, ``_ . @ -``);
* ``HASH`` is ``sha256:`` and the hex SHA-256 of the key. Keys are 256-bit random tokens,
  so a fast hash is enough: there is nothing to brute-force;
* ``PERMISSION`` — ``priority`` lets the key use the priority lane (``X-Priority: high``).

``python -m flux_server keys add USER [--priority] --file FILE`` creates a key, prints it
once and appends only its hash. In Kubernetes the file is a Secret mounted into the pod
(``kubectl create secret generic fluxserve-api-keys --from-file=keys=FILE``) and passed
as ``--api-keys /path/keys``; ``KeyStore.reload_if_changed`` picks up an updated Secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

KEY_PREFIX = "fxs_"
"""Generated keys start with this, so secret scanners and people can recognise them."""
HASH_SCHEME = "sha256:"
PERMISSIONS = frozenset({"priority"})
USER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class Principal(BaseModel):
    """Who a valid key belongs to and what it may do."""

    model_config = ConfigDict(frozen=True)

    user: str
    can_priority: bool = False


class KeyFileError(ValueError):
    """A keys file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class KeyEntry:
    """One line of the keys file."""

    user: str
    digest: bytes
    permissions: frozenset[str]

    def to_line(self) -> str:
        perms = ",".join(sorted(self.permissions))
        return f"{self.user} {HASH_SCHEME}{self.digest.hex()}" + (f" {perms}" if perms else "")


def new_key() -> str:
    """A fresh random API key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    """The digest stored for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def parse_keys(lines: Iterable[str], source: str = "<keys>") -> list[KeyEntry]:
    """Entries of a keys file; ``KeyFileError`` names ``source`` and the line on error."""
    entries: list[KeyEntry] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"{source}:{number}"
        if len(fields) not in (2, 3):
            raise KeyFileError(f"{where}: expected 'USER sha256:HEX [PERMISSION,...]'")
        user, hashed = fields[0], fields[1]
        if not USER_PATTERN.match(user):
            raise KeyFileError(f"{where}: invalid user {user!r} (letters, digits, _ . @ -)")
        hex_digest = hashed.removeprefix(HASH_SCHEME)
        if not hashed.startswith(HASH_SCHEME) or not _HEX_DIGEST.match(hex_digest):
            raise KeyFileError(f"{where}: the key must be stored as sha256:<64 hex digits>")
        permissions = (
            frozenset(p for p in fields[2].split(",") if p) if len(fields) == 3 else frozenset()
        )
        unknown = permissions - PERMISSIONS
        if unknown:
            raise KeyFileError(
                f"{where}: unknown permission {sorted(unknown)[0]!r} "
                f"(known: {', '.join(sorted(PERMISSIONS))})"
            )
        entries.append(KeyEntry(user, bytes.fromhex(hex_digest), permissions))
    return entries


def _signature(path: Path) -> tuple[int, int, int] | None:
    # Follows symlinks, so a kubelet swap of the Secret's ..data link changes it.
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class KeyStore:
    """The keys a server accepts."""

    def __init__(self, entries: Iterable[KeyEntry], path: Path | None = None) -> None:
        self._entries = tuple(entries)
        self.path = path
        self._signature = _signature(path) if path is not None else None

    @classmethod
    def from_file(cls, path: str | Path) -> KeyStore:
        """Load a keys file; a missing or malformed file is a ``KeyFileError``."""
        path = Path(path)
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise KeyFileError(f"api keys file {path}: {exc.strerror or exc}") from exc
        store = cls(parse_keys(text.splitlines(), source=str(path)), path)
        if not store._entries:
            log.warning(
                "api keys file has no keys: every request will be refused",
                extra={"path": str(path)},
            )
        return store

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def users(self) -> list[str]:
        return sorted({entry.user for entry in self._entries})

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal a key belongs to, or None. Every stored hash is compared, in
        constant time, so the answer's timing says nothing about which keys exist."""
        if not token:
            return None
        digest = hash_key(token)
        found: KeyEntry | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest) and found is None:
                found = entry
        if found is None:
            return None
        return Principal(user=found.user, can_priority="priority" in found.permissions)

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed on disk (an updated Secret). A file that no longer
        parses is logged and the keys already loaded are kept. True when reloaded."""
        if self.path is None:
            return False
        signature = _signature(self.path)
        if signature is None or signature == self._signature:
            return False
        try:
            fresh = KeyStore.from_file(self.path)
        except KeyFileError as exc:
            log.error("api keys file not reloaded: %s", exc, extra={"path": str(self.path)})
            self._signature = signature
            return False
        self._entries, self._signature = fresh._entries, signature
        log.info("api keys reloaded", extra={"path": str(self.path), "keys": len(self._entries)})
        return True


def write_entries(path: Path, lines: Iterable[str]) -> None:
    """Replace a keys file atomically, readable by its owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.writelines(line if line.endswith("\n") else line + "\n" for line in lines)
    os.replace(tmp, path)
