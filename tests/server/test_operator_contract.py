"""The command line the operator renders into the server's pod is one the server
accepts: every good example FluxDeployment, every flag, the same meaning."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flux_server.settings import load_settings

EXAMPLES = sorted((Path(__file__).parent.parent / "operator" / "examples" / "good").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_rendered_server_args_parse(example: Path) -> None:
    render = pytest.importorskip("flux_operator.render")
    from flux_operator.spec import FluxDeploymentSpec

    spec = FluxDeploymentSpec.model_validate(yaml.safe_load(example.read_text())["spec"])
    revision = render.Revision(
        release=spec.release, image="img", presets_hash="abc", presets_config_map="cm"
    )
    args = render.server_args(spec, revision)
    # Secret-backed variables hold a value at run time; any placeholder will do here.
    env = {
        item["name"]: item.get("value", "redis://redis:6379/0")
        for item in render.server_env(spec)
        if item["name"].startswith("FLUXSERVE_")
    }
    settings = load_settings(args, env)
    assert settings.release == spec.release
    assert settings.max_batch_size == spec.batching.max_batch_size
    assert settings.batch_wait == spec.batching.wait
    assert settings.http_port == 8080 and settings.grpc_port == 50051
    from flux_server.execution.lora import parse_lora_flags

    loras = parse_lora_flags(settings.lora)
    assert [(lora.name, lora.scale) for lora in loras] == [(s.name, s.scale) for s in spec.loras]
    assert settings.enable_editing == spec.editing.enabled
