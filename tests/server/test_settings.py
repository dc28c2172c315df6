"""Settings come from flags over FLUXSERVE_* variables over defaults."""

from __future__ import annotations

import pytest

from flux_server.settings import SettingsError, build_parser, load_settings


def test_flags_win_over_environment() -> None:
    settings = load_settings(
        ["--model", "/m", "--max-batch-size", "2", "--lora", "a=/a", "--lora", "b=/b:0.5"],
        {"FLUXSERVE_MAX_BATCH_SIZE": "8", "FLUXSERVE_RELEASE": "v1.4.2"},
    )
    assert settings.max_batch_size == 2
    assert settings.release == "v1.4.2"
    assert settings.lora == ("a=/a", "b=/b:0.5")
    assert settings.http_port == 8080 and settings.grpc_port == 50051


def test_environment_alone_configures_everything() -> None:
    settings = load_settings(
        [],
        {
            "FLUXSERVE_MODEL": "black-forest-labs/FLUX.1-dev",
            "FLUXSERVE_ENABLE_EDITING": "true",
            "FLUXSERVE_WARMUP": "false",
            "FLUXSERVE_LORA": "a=/a, b=/b",
            "FLUXSERVE_DRAIN_TIMEOUT": "5",
        },
    )
    assert settings.enable_editing is True
    assert settings.warmup is False
    assert settings.lora == ("a=/a", "b=/b")
    assert settings.drain_timeout == 5


def test_bad_value_names_flag_and_limit() -> None:
    with pytest.raises(SettingsError, match=r"--max-batch-size / FLUXSERVE_MAX_BATCH_SIZE.*1"):
        load_settings(["--model", "m", "--max-batch-size", "0"])
    with pytest.raises(SettingsError, match="FLUXSERVE_WARMUP"):
        load_settings(["--model", "m"], {"FLUXSERVE_WARMUP": "maybe"})
    with pytest.raises(SettingsError, match="--default-steps 28 is over --max-steps 10"):
        load_settings(["--model", "m", "--max-steps", "10"])
    with pytest.raises(SettingsError, match="--model"):
        load_settings([])


def test_every_contract_flag_exists() -> None:
    help_text = build_parser().format_help()
    for flag in (
        "--model", "--model-revision", "--http-port", "--grpc-port", "--metrics-port", "--host",
        "--device", "--dtype", "--max-batch-size", "--max-delay-ms", "--max-queue",
        "--presets-dir", "--release", "--drain-timeout", "--log-level", "--lora", "--blocklist",
        "--safety-model", "--audit-log", "--audit-hash-prompts", "--api-keys", "--redis-url",
        "--cache-bytes", "--cache-ttl", "--enable-editing", "--kontext-model", "--vqa-model",
        "--max-image-pixels",
    ):  # fmt: skip
        assert flag in help_text
