"""API keys: the keys command writes hashes only; the store authenticates and reloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flux_server.admission import keys
from flux_server.admission.auth import KeyFileError, KeyStore, Principal, bearer_token, hash_key


def _add(capsys: pytest.CaptureFixture[str], path: Path, user: str, *extra: str) -> str:
    assert keys.main(["add", user, "--file", str(path), *extra]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("fxs_") and "\n" not in out
    return out


def test_added_keys_authenticate_and_only_hashes_are_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys"
    alice = _add(capsys, path, "alice", "--priority")
    bob = _add(capsys, path, "bob")
    text = path.read_text("utf-8")
    assert alice not in text and bob not in text
    assert hash_key(alice).hex() in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    store = KeyStore.from_file(path)
    assert store.authenticate(alice) == Principal(user="alice", can_priority=True)
    assert store.authenticate(bob) == Principal(user="bob", can_priority=False)
    assert store.authenticate(bob + "x") is None
    assert store.authenticate("") is None
    assert store.authenticate(None) is None
    assert store.users == ["alice", "bob"]


def test_keys_command_accepts_leading_keys_word(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys"
    assert keys.main(["keys", "add", "carol", "--file", str(path)]) == 0
    key = capsys.readouterr().out.strip()
    assert KeyStore.from_file(path).authenticate(key) == Principal(user="carol")


def test_list_and_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys"
    _add(capsys, path, "alice", "--priority")
    bob = _add(capsys, path, "bob")
    assert keys.main(["list", "--file", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "alice\tpriority\tsha256:" in listing and "bob\t-\t" in listing
    assert keys.main(["remove", "alice", "--file", str(path)]) == 0
    store = KeyStore.from_file(path)
    assert store.users == ["bob"] and store.authenticate(bob) is not None
    assert keys.main(["remove", "alice", "--file", str(path)]) == 1
    assert "no key for 'alice'" in capsys.readouterr().err


def test_invalid_user_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert keys.main(["add", "no spaces/here", "--file", str(tmp_path / "keys")]) == 2
    assert "invalid user" in capsys.readouterr().err
    assert not (tmp_path / "keys").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("alice\n", r"keys:1: expected 'USER sha256:HEX"),
        ("# c\nalice plain-text-key\n", r"keys:2: the key must be stored as sha256"),
        (f"alice sha256:{'0' * 64} admin\n", r"keys:1: unknown permission 'admin'"),
        (f"bad/user sha256:{'0' * 64}\n", r"keys:1: invalid user"),
    ],
)
def test_malformed_file_names_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "keys"
    path.write_text(content, "utf-8")
    with pytest.raises(KeyFileError, match=message):
        KeyStore.from_file(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="api keys file"):
        KeyStore.from_file(tmp_path / "absent")


def test_reload_follows_a_secret_update(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Lay the file out as kubelet mounts a Secret: keys -> ..data/keys, ..data -> ..v1
    mount = tmp_path / "secret"
    (mount / "..v1").mkdir(parents=True)
    first = _add(capsys, mount / "..v1" / "keys", "alice")
    os.symlink("..v1", mount / "..data")
    os.symlink("..data/keys", mount / "keys")
    store = KeyStore.from_file(mount / "keys")
    assert store.authenticate(first) is not None
    assert not store.reload_if_changed()

    (mount / "..v2").mkdir()
    second = _add(capsys, mount / "..v2" / "keys", "bob", "--priority")
    os.symlink("..v2", mount / "..data_tmp")
    os.replace(mount / "..data_tmp", mount / "..data")  # kubelet's atomic swap
    assert store.reload_if_changed()
    assert store.authenticate(first) is None
    assert store.authenticate(second) == Principal(user="bob", can_priority=True)


def test_broken_update_keeps_the_loaded_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys"
    key = _add(capsys, path, "alice")
    store = KeyStore.from_file(path)
    path.write_text("garbage\n", "utf-8")
    assert not store.reload_if_changed()
    assert store.authenticate(key) == Principal(user="alice")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer fxs_abc", "fxs_abc"),
        ("bearer   fxs_abc ", "fxs_abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_python_m_flux_server_keys_add(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "keys"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flux_server",
            "keys",
            "add",
            "dave",
            "--priority",
            "--file",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert "shown only this once" in done.stderr
    assert KeyStore.from_file(path).authenticate(key) == Principal(user="dave", can_priority=True)
