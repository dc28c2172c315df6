"""``spec.performance`` renders to server flags the server itself accepts."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from flux_operator.render import Owner, desired_revision, performance_args, render_all, server_args
from flux_operator.spec import FluxDeployment, PerformanceSpec
from flux_server.settings import load_settings

OWNER = Owner(name="flux-dev", namespace="studio", uid="6f1c0a52-0000-4000-8000-000000000002")

DOC = """
apiVersion: fluxserve.dev/v1alpha1
kind: FluxDeployment
metadata: {name: flux-dev, namespace: studio}
spec:
  release: v1.5.0
  model:
    id: black-forest-labs/FLUX.1-dev
    source: {hub: {tokenSecretRef: {name: hf-token, key: token}}}
  performance:
    compile: regional
    warmupSizes: [1024x1024, 768x1344]
    quantize: int8
    stepCache: "first-block:0.08"
    attentionBackend: native
    vaeTiling: true
    loraMaxRank: 64
"""


def test_performance_renders_to_server_flags_the_server_accepts() -> None:
    spec = FluxDeployment.model_validate(yaml.safe_load(DOC)).spec
    args = server_args(spec, desired_revision(OWNER, spec))
    expected = [
        "--compile=regional",
        "--warmup-sizes=1024x1024,768x1344",
        "--quantize=int8",
        "--step-cache=first-block:0.08",
        "--attention-backend=native",
        "--vae-tiling",
        "--lora-max-rank=64",
    ]
    for flag in expected:
        assert flag in args, flag
    deployment = next(o for o in render_all(OWNER, spec) if o["kind"] == "Deployment")
    assert set(expected) <= set(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    # The same flags through the server's own parser (on this machine's CPU).
    settings = load_settings(["--model=/models", "--device=cpu", *expected], {})
    assert settings.warmup_sizes == ("1024x1024", "768x1344")
    assert settings.step_cache == "first-block:0.08" and settings.lora_max_rank == 64


def test_no_performance_section_renders_no_speed_flag() -> None:
    assert performance_args(None) == []
    assert performance_args(PerformanceSpec()) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"warmupSizes": ["1024*1024"]},
        {"stepCache": "first-block:2"},
        {"quantize": "int4"},
        {"compile": "max"},
        {"loraMaxRank": 0},
    ],
)
def test_bad_performance_values_are_refused_by_the_schema(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PerformanceSpec.model_validate(bad)
