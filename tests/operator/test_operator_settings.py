"""The operator's settings: one pydantic object, every field a flag and a
FLUXSERVE_OPERATOR_* variable shown in --help with its default; and a process that cannot
start (busy health port, missing extra, bad value) says why in one line."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flux_operator.cli import main
from flux_operator.settings import (
    OperatorSettings,
    SettingsError,
    describe_default,
    load_settings,
    options,
)


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=False
    )


def _help_lines(text: str) -> str:
    return " ".join(text.split())  # argparse wraps help at the terminal width


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"]], ids=["top", "run"])
def test_help_shows_every_flag_with_its_default_and_variable(argv: list[str]) -> None:
    result = _python("-m", "flux_operator", *argv)
    assert result.returncode == 0, result.stderr
    text = _help_lines(result.stdout)
    for option in options():
        assert option.flag in text
        assert f"[env {option.env}] (default: {describe_default(option)})" in text
    assert "--health-port" in text and "(default: 8081)" in text


def test_flags_win_over_variables_over_defaults() -> None:
    assert OperatorSettings().health_port == 8081
    env = {
        "FLUXSERVE_OPERATOR_HEALTH_PORT": "9000",
        "FLUXSERVE_OPERATOR_NAMESPACES": "a, b",
        "FLUXSERVE_OPERATOR_RETRY_ATTEMPTS": "3",
        "FLUXSERVE_OPERATOR_VERBOSE": "true",
    }
    settings = load_settings([], env)
    assert (settings.health_port, settings.namespaces) == (9000, ("a", "b"))
    assert settings.retry.attempts == 3 and settings.verbose
    settings = load_settings(["--health-port", "9001", "--namespace", "c", "--no-verbose"], env)
    assert (settings.health_port, settings.namespaces, settings.verbose) == (9001, ("c",), False)


def test_a_bad_value_names_the_flag_the_variable_and_the_limit() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(["--health-port", "70000"])
    assert str(caught.value).startswith(
        "--health-port / FLUXSERVE_OPERATOR_HEALTH_PORT: Input should be less than or equal to "
        "65535"
    )
    with pytest.raises(SettingsError, match="--retry-attempts / FLUXSERVE_OPERATOR_RETRY_ATT"):
        load_settings([], {"FLUXSERVE_OPERATOR_RETRY_ATTEMPTS": "0"})
    with pytest.raises(SettingsError, match="FLUXSERVE_OPERATOR_VERBOSE='maybe' is not a bool"):
        load_settings([], {"FLUXSERVE_OPERATOR_VERBOSE": "maybe"})


def test_a_bad_value_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--resync-seconds", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --resync-seconds / ")


def test_a_busy_health_port_is_one_line_naming_flag_and_port() -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _python("-m", "flux_operator", "--health-port", str(port))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: --health-port {port}: ")
    assert "in use" in result.stderr


@pytest.mark.parametrize("missing", ["kopf", "kubernetes"])
@pytest.mark.parametrize("argv", [[], ["history", "x"]], ids=["run", "history"])
def test_without_the_operator_extra_the_process_names_it(missing: str, argv: list[str]) -> None:
    # The module is made unimportable as if it were not installed, then the real entry
    # point runs (`python -m flux_operator`).
    blocked = (
        f"import runpy, sys; sys.modules[{missing!r}] = None; "
        f"sys.argv = ['flux_operator', *{argv!r}]; "
        "runpy.run_module('flux_operator', run_name='__main__', alter_sys=True)"
    )
    result = _python("-c", blocked)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "pip install 'fluxserve[operator]'" in result.stderr and missing in result.stderr


def test_the_readme_lists_every_flag_and_variable() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## The operator\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `--")]
    for option in options():
        (row,) = [r for r in rows if f"`{option.flag} " in r or f"`{option.flag}`" in r]
        assert f"`{option.env}`" in row, option.env
        default = describe_default(option)
        if default not in ("unset", "none"):
            assert f"`{default}`" in row, (option.flag, default)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--bogus"],
            "error: unrecognized arguments: --bogus (see: python -m flux_operator --help)",
        ),
        (
            ["run", "--log-format", "xml"],
            "error: argument --log-format: invalid choice: 'xml'",
        ),
    ],
)
def test_a_bad_flag_is_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message), err
