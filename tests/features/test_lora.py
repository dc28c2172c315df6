"""LoRA adapters: the flag, loading through diffusers' PEFT integration, switching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flux_server.execution.lora import (
    AdapterSwitch,
    LoraFlagError,
    LoraLoadError,
    LoraSpec,
    UnknownAdapterError,
    activate,
    load_adapters,
    loaded_adapters,
    parse_lora_flag,
    parse_lora_flags,
    write_tiny_lora,
)

# Several adapters in one model is the point here; PEFT warns about it regardless.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Already found a `peft_config`:UserWarning",
    "ignore:Adapter .* was active which is now deleted:UserWarning",
)

# --- the flag -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        ("ink=/models/ink", LoraSpec(name="ink", path="/models/ink", scale=1.0)),
        (
            "ink=/models/ink.safetensors:0.8",
            LoraSpec(name="ink", path="/models/ink.safetensors", scale=0.8),
        ),
        ("neon_v2=rel/dir:0", LoraSpec(name="neon_v2", path="rel/dir", scale=0.0)),
        ("a-b=x:4", LoraSpec(name="a-b", path="x", scale=4.0)),
    ],
)
def test_parse_lora_flag(value: str, spec: LoraSpec) -> None:
    assert parse_lora_flag(value) == spec


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ink", "expected NAME=PATH"),
        ("=path", "adapter name ''"),
        ("in.k=path", "adapter name 'in.k'"),
        ("ink=", "the path is empty"),
        ("ink=:0.5", "the path is empty"),
        ("ink=path:strong", "scale 'strong' is not a number"),
        ("ink=path:5", "scale 5 is outside 0 to 4"),
        ("ink=path:-1", "outside 0 to 4"),
        ("ink=path:nan", "outside 0 to 4"),
    ],
)
def test_bad_lora_flag_says_why(value: str, message: str) -> None:
    with pytest.raises(LoraFlagError) as info:
        parse_lora_flag(value)
    assert str(info.value).startswith(f"--lora {value!r}: ")
    assert message in str(info.value)


def test_duplicate_adapter_names_are_refused() -> None:
    with pytest.raises(LoraFlagError, match="given twice"):
        parse_lora_flags(["ink=a", "ink=b"])


# --- loading and switching, on a tiny FLUX pipeline ------------------------------------


@pytest.fixture(scope="module")
def pipe(tiny_flux_dir: Path) -> Any:
    from diffusers import FluxPipeline

    return FluxPipeline.from_pretrained(tiny_flux_dir)


@pytest.fixture(scope="module")
def adapter_files(pipe: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    return {
        "ink": write_tiny_lora(pipe, root / "ink", "ink", seed=1),
        "neon": write_tiny_lora(pipe, root / "neon", "neon", seed=2),
    }


def _image(pipe: Any) -> np.ndarray:
    import torch

    result = pipe(
        prompt="a lighthouse",
        width=32,
        height=32,
        num_inference_steps=2,
        guidance_scale=3.5,
        max_sequence_length=32,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="np",
    )
    return np.asarray(result.images[0])


def test_write_tiny_lora_leaves_the_pipeline_alone(
    pipe: Any, adapter_files: dict[str, Path]
) -> None:
    assert adapter_files["ink"].is_file() and adapter_files["ink"].stat().st_size > 0
    assert not getattr(pipe.transformer, "peft_config", None) or "ink" not in loaded_adapters(pipe)


def test_adapters_load_once_and_switch_per_request(
    pipe: Any, adapter_files: dict[str, Path]
) -> None:
    base = _image(pipe)
    specs = [
        LoraSpec(name="ink", path=str(adapter_files["ink"].parent)),  # a directory
        LoraSpec(name="neon", path=str(adapter_files["neon"]), scale=0.5),  # a file
    ]
    loaded = load_adapters(pipe, specs)
    assert set(loaded) == {"ink", "neon"} and loaded_adapters(pipe) == {"ink", "neon"}
    assert np.array_equal(_image(pipe), base), "adapters must start switched off"

    switch = AdapterSwitch(pipe)
    switch.ensure({"ink": 1.0})
    ink = _image(pipe)
    assert not np.allclose(ink, base)

    switch.ensure({"ink": 1.0, "neon": 0.5})
    both = _image(pipe)
    assert not np.allclose(both, ink)

    switch.ensure({"ink": 0.5})
    assert not np.allclose(_image(pipe), ink)  # the scale matters

    switch.ensure({"ink": 1.0})
    assert np.allclose(_image(pipe), ink)

    switch.ensure({})
    assert np.array_equal(_image(pipe), base), "no adapters must give the base model"

    with pytest.raises(UnknownAdapterError, match=r"unknown adapter 'mist' \(known: ink, neon\)"):
        activate(pipe, {"mist": 1.0})


def test_fingerprint_follows_the_weights_not_the_path(
    adapter_files: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    from flux_server.execution.lora import fingerprint

    ink_file = LoraSpec(name="ink", path=str(adapter_files["ink"]))
    ink_dir = LoraSpec(name="ink", path=str(adapter_files["ink"].parent))
    copy_dir = tmp_path / "copy"
    shutil.copytree(adapter_files["ink"].parent, copy_dir)
    assert fingerprint(ink_dir) == fingerprint(LoraSpec(name="ink", path=str(copy_dir)))
    assert fingerprint(ink_file) == fingerprint(ink_dir)  # same single file
    neon_dir = LoraSpec(name="neon", path=str(adapter_files["neon"].parent))
    assert fingerprint(neon_dir) != fingerprint(ink_dir)


def test_missing_adapter_path_names_the_adapter(pipe: Any, tmp_path: Path) -> None:
    with pytest.raises(LoraLoadError, match=r"adapter 'ghost'.*does not exist"):
        load_adapters(pipe, [LoraSpec(name="ghost", path=str(tmp_path / "absent"))])


def test_unreadable_adapter_names_the_adapter(pipe: Any, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a safetensors file")
    with pytest.raises(LoraLoadError, match="adapter 'bogus' from"):
        load_adapters(pipe, [LoraSpec(name="bogus", path=str(bogus))])


def test_adapter_from_a_mounted_configmap_directory(
    pipe: Any, adapter_files: dict[str, Path], tmp_path: Path
) -> None:
    # Laid out as kubelet mounts a ConfigMap: the file is a link into ..data, and the
    # directory also holds the ..data link and the timestamped folder.
    import os
    import shutil

    mount = tmp_path / "ink-cm"
    (mount / "..2026_01_01").mkdir(parents=True)
    shutil.copy(adapter_files["ink"], mount / "..2026_01_01" / "ink.safetensors")
    os.symlink("..2026_01_01", mount / "..data")
    os.symlink("..data/ink.safetensors", mount / "ink.safetensors")
    load_adapters(pipe, [LoraSpec(name="ink_cm", path=str(mount))])
    assert "ink_cm" in loaded_adapters(pipe)
    pipe.delete_adapters("ink_cm")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device")
def test_adapters_on_cuda_in_bfloat16(tiny_flux_dir: Path, tmp_path: Path) -> None:
    import torch
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(tiny_flux_dir, torch_dtype=torch.bfloat16).to("cuda")
    weights = write_tiny_lora(pipe, tmp_path / "ink", "ink", seed=1)
    load_adapters(pipe, [LoraSpec(name="ink", path=str(weights))])

    def image() -> np.ndarray:
        result = pipe(
            prompt="a lighthouse",
            width=32,
            height=32,
            num_inference_steps=2,
            max_sequence_length=32,
            generator=torch.Generator("cuda").manual_seed(0),
            output_type="np",
        )
        return np.asarray(result.images[0], dtype=np.float32)

    base = image()
    activate(pipe, {"ink": 1.0})
    assert not np.allclose(image(), base)
    activate(pipe, {})
    assert np.allclose(image(), base)


def test_only_requests_with_the_same_adapter_set_share_a_batch() -> None:
    from flux_server.requests.params import AdapterRequest, GenerateParams, resolve
    from flux_server.settings import ServerSettings

    settings = ServerSettings(model="tiny")
    known = {"ink": 1.0, "neon": 0.5}

    def key(*adapters: tuple[str, float | None]) -> tuple[object, ...]:
        params = GenerateParams(
            prompt="a lighthouse",
            adapters=[AdapterRequest(name=n, scale=s) for n, s in adapters],
        )
        return resolve(params, {}, settings, known).batch_key()

    assert key(("ink", None)) == key(("ink", 1.0))  # the default scale is the same set
    assert key() != key(("ink", 1.0))
    assert key(("ink", 1.0)) != key(("ink", 0.5))
    assert key(("ink", 1.0)) != key(("neon", 0.5))
    assert key(("ink", 1.0), ("neon", 0.5)) == key(("neon", 0.5), ("ink", 1.0))


@pytest.mark.parametrize(
    ("flag", "message"),
    [("bad", r"--lora 'bad': expected NAME=PATH"), ("ink={dir}/nope:0.5", r"--lora ink: .*nope")],
)
def test_a_bad_lora_flag_fails_before_the_model_loads(
    tmp_path: Path, flag: str, message: str
) -> None:
    from flux_server.service.core import GenerationService
    from flux_server.settings import ServerSettings

    # The model does not exist either: the flag is refused before anything loads.
    settings = ServerSettings(model=str(tmp_path / "absent"), lora=(flag.format(dir=tmp_path),))
    with pytest.raises(ValueError, match=message):
        GenerationService(settings)
