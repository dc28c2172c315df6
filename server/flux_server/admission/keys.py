"""``python -m flux_server keys``: manage the API keys file.

    python -m flux_server keys add USER [--priority] --file FILE
    python -m flux_server keys list --file FILE
    python -m flux_server keys remove USER --file FILE

``add`` prints the new key once, on stdout, and stores only its hash; a lost key cannot be
recovered, only replaced. The file format is described in ``flux_server.admission.auth``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from flux_server.admission.auth import (
    HASH_SCHEME,
    USER_PATTERN,
    KeyEntry,
    KeyFileError,
    hash_key,
    new_key,
    parse_keys,
    write_entries,
)

_HEADER = (
    "# fluxserve API keys: USER sha256:HEX [PERMISSION,...]  (see flux_server.admission.auth)\n"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flux_server keys", description="Manage the API keys file (--api-keys)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="create a key for USER, print it once, store its hash")
    add.add_argument("user", help="the user the key names in the audit log")
    add.add_argument("--priority", action="store_true", help="allow the priority lane")
    add.add_argument("--file", type=Path, required=True, help="the keys file (created if absent)")
    listing = commands.add_parser("list", help="list users, permissions and key fingerprints")
    listing.add_argument("--file", type=Path, required=True)
    remove = commands.add_parser("remove", help="remove every key of USER")
    remove.add_argument("user")
    remove.add_argument("--file", type=Path, required=True)
    return parser


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    lines = path.read_text("utf-8").splitlines(keepends=True)
    parse_keys(lines, source=str(path))  # refuse to touch a file we cannot read back
    return lines


def _add(path: Path, user: str, priority: bool) -> int:
    if not USER_PATTERN.match(user):
        print(f"error: invalid user {user!r} (letters, digits, _ . @ -)", file=sys.stderr)
        return 2
    lines = _read_lines(path) or [_HEADER]
    key = new_key()
    entry = KeyEntry(user, hash_key(key), frozenset({"priority"}) if priority else frozenset())
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    write_entries(path, [*lines, entry.to_line()])
    print(key)
    print(
        f"key for {user!r} added to {path}{' with priority' if priority else ''}; "
        "it is shown only this once",
        file=sys.stderr,
    )
    return 0


def _list(path: Path) -> int:
    for entry in parse_keys(_read_lines(path), source=str(path)):
        perms = ",".join(sorted(entry.permissions)) or "-"
        print(f"{entry.user}\t{perms}\t{HASH_SCHEME}{entry.digest.hex()[:12]}…")
    return 0


def _remove(path: Path, user: str) -> int:
    lines = _read_lines(path)
    kept = [line for line in lines if line.split()[:1] != [user] or line.lstrip().startswith("#")]
    if len(kept) == len(lines):
        print(f"error: no key for {user!r} in {path}", file=sys.stderr)
        return 1
    write_entries(path, kept)
    print(f"removed {len(lines) - len(kept)} key(s) of {user!r}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``keys`` command; ``argv`` is what follows ``keys`` (a leading ``keys`` is
    accepted too). Returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["keys"]:
        args_list = args_list[1:]
    args = _parser().parse_args(args_list)
    try:
        if args.command == "add":
            return _add(args.file, args.user, args.priority)
        if args.command == "list":
            return _list(args.file)
        return _remove(args.file, args.user)
    except (KeyFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
