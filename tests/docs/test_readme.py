"""Every shell block of the README works when pasted, or says why it cannot run here.

A block marked ``<!-- readme: run -->`` is run for real with bash (``set -eo pipefail``)
in an empty temporary directory, the project's Python first on PATH, against the tiny
random-weight model it writes itself. It runs in a network namespace of its own where
one can be made (``unshare``), so the README's fixed ports (8080, 50051) are its own;
elsewhere it runs only when those ports are free. It must exit 0 and leave no process
running (a block that starts a server says how to stop it). Every HTTP answer its
``curl`` calls get is recorded (a ``curl`` first on PATH adds a ``--write-out``; a call
with a ``--write-out`` of its own shows its status itself): one of 400 or more fails the
block unless the block's comments name that status (``# 503``).

A block marked with any other reason is not run; it must still parse (``bash -n``), and
every ``python -m flux_*`` subcommand and flag, ``make`` target and repository file it
names must exist. A shell block without a marker fails.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from readme_blocks import (
    Block,
    flags_of,
    make_targets,
    module_calls,
    names_flag,
    repository_paths,
    shell_blocks,
    subcommand_choices,
)

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOCKS = shell_blocks(README.read_text())
README_PORTS = (8080, 50051)
BLOCK_TIMEOUT = 240.0  # seconds; the slowest block takes ~40 s on 2 CPU cores
STOP_TIMEOUT = 60.0  # for what a block stopped (a server drains) to exit
_PREAMBLE = (
    "set -eo pipefail\ntrap 'echo \"readme-test: line $LINENO: exit $?: $BASH_COMMAND\" >&2' ERR\n"
)


def _id(block: Block) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", block.heading.lower()).strip("-")[:30]
    return f"line{block.line}-{slug}"


RUNNABLE = [b for b in BLOCKS if b.runnable]
NOT_RUN = [b for b in BLOCKS if b.marker is not None and not b.runnable]


def test_every_shell_block_is_marked() -> None:
    unmarked = [b.where for b in BLOCKS if b.marker is None]
    assert not unmarked, (
        "each shell block needs `<!-- readme: run -->` (run by this test) or "
        "`<!-- readme: REASON -->` (why it cannot run here) on the line before it:\n  "
        + "\n  ".join(unmarked)
    )
    assert RUNNABLE, "no README block is marked `<!-- readme: run -->`"


@pytest.mark.parametrize("block", BLOCKS, ids=[_id(b) for b in BLOCKS])
def test_block_parses(block: Block) -> None:
    proc = subprocess.run(
        ["bash", "-n"], input=block.code, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"{block.where} does not parse as bash:\n{proc.stderr}"


@functools.cache
def _run_help(module: str, path: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *path, "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _help(module: str, path: tuple[str, ...]) -> str:
    proc = _run_help(module, path)
    if proc.returncode != 0:
        raise AssertionError(
            f"`python -m {module} {' '.join(path)} --help` failed:\n{proc.stderr[-2000:]}"
        )
    return proc.stdout


def _is_subcommand(module: str, path: tuple[str, ...], word: str) -> bool:
    """Listed by argparse, or answering --help with a help of its own (a subcommand
    dispatched before argparse, e.g. `keys`)."""
    if word in subcommand_choices(_help(module, path)):
        return True
    if not re.fullmatch(r"[a-z][a-z-]*", word):
        return False
    proc = _run_help(module, (*path, word))
    return proc.returncode == 0 and proc.stdout != _help(module, path)


def _command_problems(block: Block) -> list[str]:
    problems = []
    for call in module_calls(block.code):
        path: list[str] = []
        helps = [_help(call.module, ())]
        for word in call.words:
            if word.startswith("-"):
                continue
            if _is_subcommand(call.module, tuple(path), word):
                path.append(word)
                helps.append(_help(call.module, tuple(path)))
        command = " ".join(["python -m", call.module, *path])
        for flag in flags_of(call.words):
            if not any(names_flag(text, flag) for text in helps):
                problems.append(f"`{command}` has no flag {flag} (see its --help)")
    makefile = (ROOT / "Makefile").read_text()
    for target in make_targets(block.code):
        if not re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE):
            problems.append(f"the Makefile has no target `{target}`")
    top_level = {p.name for p in ROOT.iterdir()} - {".git"}
    for path_named in repository_paths(block.code, top_level):
        # A glob (`data/*.tsv`) names what it matches: at least one file.
        globbed = any(c in path_named for c in "*?[")
        if not (any(ROOT.glob(path_named)) if globbed else (ROOT / path_named).exists()):
            problems.append(f"it names {path_named}, which is not in the repository")
    return problems


@pytest.mark.parametrize("block", NOT_RUN, ids=[_id(b) for b in NOT_RUN])
def test_not_runnable_block_names_what_exists(block: Block) -> None:
    problems = _command_problems(block)
    assert not problems, f"{block.where} ({block.marker}):\n  " + "\n  ".join(problems)


def _isolation() -> list[str] | None:
    """A command prefix giving the block a network namespace of its own, if one can be had."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    probe = subprocess.run(
        ["unshare", "--net", "--map-root-user", "ip", "link", "set", "lo", "up"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return None
    up_then_run = 'ip link set lo up && exec bash "$0"'
    return ["unshare", "--net", "--map-root-user", "bash", "-c", up_then_run]


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


_CURL_MARK = "readme-test-curl"


def _curl_recorder(directory: Path) -> Path:
    """A ``curl`` that runs the real one with a ``--write-out`` printing each answer's
    status to stderr (the block's output). The block's own ``--write-out``, later on the
    line, replaces it."""
    real = shutil.which("curl")
    directory.mkdir(exist_ok=True)
    wrapper = directory / "curl"
    if real is not None:
        mark = f"%{{stderr}}{_CURL_MARK} %{{http_code}} %{{method}} %{{url_effective}}\\n"
        wrapper.write_text(f"#!/bin/sh\nexec {real} --write-out '{mark}' \"$@\"\n")
        wrapper.chmod(0o755)
    return directory


def _refused_calls(block: Block, output: str) -> list[str]:
    """The recorded answers of 400 or more whose status the block does not announce in a
    comment (``# 503``)."""
    announced = set(re.findall(r"#[^\n]*?\b([45]\d\d)\b", block.code))
    refused = []
    for status, method, url in re.findall(rf"{_CURL_MARK} (\d{{3}}) (\S+) (\S+)", output):
        if int(status) >= 400 and status not in announced:
            refused.append(f"{method} {url} answered {status}")
    return refused


def _environment(tools: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXSERVE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if tools is not None:
        env["PATH"] = f"{tools}{os.pathsep}{env['PATH']}"
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _run_block(
    block: Block, tmp_path: Path, prefix: list[str], timeout: float, stop_timeout: float
) -> str | None:
    """Run a block as pasted; None when it worked, else what went wrong, and where."""
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "block.sh"
    script.write_text(_PREAMBLE + block.code)
    output = tmp_path / "output.txt"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [*prefix, str(script)],
            cwd=work,
            env=_environment(_curl_recorder(tmp_path / "tools")),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pgid = process.pid
    try:
        try:
            returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            return f"{block.where} still ran after {timeout:.0f}s; its output:\n{_tail(output)}"
        if returncode != 0:
            failed = re.findall(r"readme-test: line (\d+): exit (\d+): (.*)", output.read_text())
            where = ""
            if failed:
                line, code, command = failed[-1]
                readme_line = block.line + int(line) - _PREAMBLE.count("\n") - 1
                where = f" at README line {readme_line}: `{command}` exited {code}"
            return f"{block.where} failed{where}; its output:\n{_tail(output)}"
        refused = _refused_calls(block, output.read_text(errors="replace"))
        if refused:
            return (
                f"{block.where}: curl got answers the block does not announce (a comment "
                f"`# STATUS` does): {'; '.join(refused)}; its output:\n{_tail(output)}"
            )
        deadline = time.monotonic() + stop_timeout
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_alive(pgid):
            return (
                f"{block.where} left processes running {stop_timeout:.0f}s after it ended: "
                "a block that starts a server must stop it (e.g. `kill %1`)"
            )
        return None
    finally:
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


def _prefix() -> list[str]:
    prefix = _isolation()
    if prefix is None:
        busy = [p for p in README_PORTS if _port_in_use(p)]
        if busy:
            pytest.skip(f"ports {busy} are in use and no network namespace can be made")
        prefix = ["bash"]
    return prefix


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=[_id(b) for b in RUNNABLE])
def test_runnable_block_works_when_pasted(block: Block, tmp_path: Path) -> None:
    problem = _run_block(block, tmp_path, _prefix(), BLOCK_TIMEOUT, STOP_TIMEOUT)
    assert problem is None, problem


def test_a_failing_block_is_reported_with_its_readme_line(tmp_path: Path) -> None:
    block = Block(100, "Example", "run", "echo one\npython -c 'raise SystemExit(3)'\necho two\n")
    problem = _run_block(block, tmp_path, ["bash"], 30, 5)
    assert problem is not None
    assert "README.md block at line 100 (section 'Example') failed at README line 101" in problem
    assert "exited 3" in problem


def test_a_block_leaving_a_process_behind_fails(tmp_path: Path) -> None:
    block = Block(7, "Example", "run", "sleep 300 &\n")
    problem = _run_block(block, tmp_path, ["bash"], 30, 1)
    assert problem is not None and "left processes running" in problem


def test_a_refused_curl_call_fails_its_block_unless_announced(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("no curl on this machine")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve = f"python -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 & server=$!\n"
    serve += f"until curl -s -o /dev/null localhost:{port}/; do sleep 0.1; done\n"
    stop = "kill $server\n"
    missing = f"curl -s -o /dev/null localhost:{port}/missing\n"
    silent = Block(5, "Example", "run", serve + missing + stop)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    problem = _run_block(silent, tmp_path / "a", ["bash"], 30, 5)
    assert problem is not None and "/missing answered 404" in problem, problem
    announced = Block(5, "Example", "run", serve + missing.rstrip() + "  # 404\n" + stop)
    assert _run_block(announced, tmp_path / "b", ["bash"], 30, 5) is None
