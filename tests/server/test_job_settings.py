"""The async job and webhook flags: defaults, validation at start, one-line refusals."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from flux_server.settings import SettingsError, build_parser, load_settings

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def test_defaults_and_flags() -> None:
    settings = load_settings(["--model", "m"])
    assert settings.job_ttl == 3600 and settings.job_max_bytes == 512 * 1024 * 1024
    assert settings.webhook_secret is None and settings.webhook_allow_hosts == ()
    settings = load_settings(
        [
            "--model", "m", "--job-ttl", "60", "--job-max-bytes", "4096",
            "--webhook-secret", SECRET,
            "--webhook-allow-hosts", "10.0.0.0/8", "--webhook-allow-hosts", "hooks.svc",
        ]
    )  # fmt: skip
    assert (settings.job_ttl, settings.job_max_bytes) == (60, 4096)
    assert settings.webhook_secret == SECRET
    assert settings.webhook_allow_hosts == ("10.0.0.0/8", "hooks.svc")
    assert SECRET not in repr(settings)
    env = load_settings(["--model", "m"], {"FLUXSERVE_WEBHOOK_ALLOW_HOSTS": "10.0.0.0/8, fd00::/8"})
    assert env.webhook_allow_hosts == ("10.0.0.0/8", "fd00::/8")
    help_text = build_parser().format_help()
    for flag in ("--job-ttl", "--job-max-bytes", "--webhook-secret", "--webhook-allow-hosts"):
        assert flag in help_text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--job-ttl", "0"], "--job-ttl / FLUXSERVE_JOB_TTL: Input should be greater than 0"),
        (["--job-max-bytes", "10"], "--job-max-bytes / FLUXSERVE_JOB_MAX_BYTES"),
        (
            ["--webhook-secret", "hunter2"],
            "--webhook-secret / FLUXSERVE_WEBHOOK_SECRET: must start",
        ),
        (["--webhook-secret", "whsec_not*base64"], "is not whsec_ followed by base64"),
        (["--webhook-secret", "whsec_c2hvcnQ="], "decodes to 5 bytes; use 24 to 64"),
        (["--webhook-allow-hosts", "10.0.0.0/40"], "--webhook-allow-hosts: '10.0.0.0/40' is not"),
        (["--webhook-allow-hosts", "a b"], "neither a host name nor a CIDR"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(["--model", "m", *argv])
    assert message in str(caught.value)
    assert "whsec_" not in str(caught.value).replace("whsec_ followed", "").replace(
        "with whsec_", ""
    )


def test_the_process_refuses_a_bad_secret_in_one_line() -> None:
    env = {**os.environ, "FLUXSERVE_WEBHOOK_SECRET": "whsec_c2hvcnQ="}
    done = subprocess.run(
        [sys.executable, "-m", "flux_server", "--model", "unused"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--webhook-secret" in lines[0] and "24 to 64" in lines[0]
