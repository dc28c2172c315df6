"""Adapters from an object store or a mounted volume, pinned by sha256 (--lora-sha256):
an S3 stand-in (moto's server, over a real socket) serves the adapter file to the real
s3fs client, and a real ``python -m flux_server`` loads it, or refuses it."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_process import start_server

from flux_server.execution.lora import (
    DEFAULT_WEIGHT_NAME,
    LoraFlagError,
    LoraSpec,
    parse_lora_flag,
)
from flux_server.execution.lora_source import (
    LoraDigestError,
    LoraLoadError,
    check_local,
    parse_sha256_flags,
    resolve,
)

pytest.importorskip("s3fs", reason="s3:// adapters need the s3 extra (pip install '.[s3]')")
moto_server = pytest.importorskip("moto.server", reason="the S3 stand-in is moto[server] (dev)")

BUCKET = "adapters"
KEY = "fluxserve/ink/pytorch_lora_weights.safetensors"
URI = f"s3://{BUCKET}/{KEY}"


@pytest.fixture(scope="module")
def adapter_file(tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diffusers import FluxPipeline

    from flux_server.execution.lora import write_tiny_lora

    pipe = FluxPipeline.from_pretrained(tiny_flux_dir)
    return write_tiny_lora(pipe, tmp_path_factory.mktemp("lora") / "ink", "ink", seed=5)


@pytest.fixture(scope="module")
def s3_env(adapter_file: Path) -> Iterator[dict[str, str]]:
    """A bucket holding the adapter, and the environment a server reads it with."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem(endpoint_url=env["AWS_ENDPOINT_URL"])
        fs.mkdir(BUCKET)
        fs.put_file(str(adapter_file), f"{BUCKET}/{KEY}")
        try:
            yield env
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- resolving, without a model -------------------------------------------------------


def test_an_s3_adapter_is_downloaded_and_verified(
    s3_env: dict[str, str], adapter_file: Path, tmp_path: Path
) -> None:
    spec = LoraSpec(name="ink", path=URI, scale=0.5)
    [local] = resolve([spec], {"ink": _sha256(adapter_file)}, tmp_path)
    assert (local.name, local.scale) == ("ink", 0.5)
    assert Path(local.path).read_bytes() == adapter_file.read_bytes()
    # A URI naming the folder means its adapter file.
    folder = LoraSpec(name="ink", path=URI.rsplit("/", 1)[0] + "/")
    [again] = resolve([folder], {}, tmp_path / "again")
    assert Path(again.path).name == DEFAULT_WEIGHT_NAME


def test_an_adapter_with_another_digest_is_refused(
    s3_env: dict[str, str], adapter_file: Path, tmp_path: Path
) -> None:
    wrong = "0" * 64
    with pytest.raises(LoraDigestError) as info:
        resolve([LoraSpec(name="ink", path=URI)], {"ink": wrong}, tmp_path)
    said = str(info.value)
    assert "'ink'" in said and URI in said
    assert f"expected {wrong}" in said and _sha256(adapter_file) in said
    # Nothing that failed the check is left where a later load could pick it up.
    assert not list(tmp_path.rglob("*.safetensors"))


def test_a_mounted_adapter_is_verified_too(adapter_file: Path, tmp_path: Path) -> None:
    """A PVC (or ConfigMap) folder: the digest covers its adapter file."""
    folder = tmp_path / "pvc"
    folder.mkdir()
    shutil.copy(adapter_file, folder / DEFAULT_WEIGHT_NAME)
    spec = LoraSpec(name="ink", path=str(folder))
    assert resolve([spec], {"ink": _sha256(adapter_file)}) == [spec]
    (folder / DEFAULT_WEIGHT_NAME).write_bytes(b"not the trained adapter")
    with pytest.raises(LoraDigestError, match=rf"'ink' from {folder}: sha256 [0-9a-f]{{64}}"):
        resolve([spec], {"ink": _sha256(adapter_file)})


def test_a_missing_object_names_the_adapter(s3_env: dict[str, str], tmp_path: Path) -> None:
    missing = f"s3://{BUCKET}/nowhere/pytorch_lora_weights.safetensors"
    with pytest.raises(LoraLoadError, match=rf"adapter 'ink': {missing} does not exist"):
        resolve([LoraSpec(name="ink", path=missing)], {}, tmp_path)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["ink"], "expected NAME=SHA256"),
        (["neon=" + "a" * 64], "no --lora adapter is named 'neon'"),
        (["ink=" + "A" * 64], "64 lowercase hex digits"),
        (["ink=abc"], "64 lowercase hex digits"),
        (["ink=" + "a" * 64, "ink=" + "b" * 64], "pinned twice"),
    ],
)
def test_a_bad_sha256_flag_says_why(values: list[str], message: str) -> None:
    with pytest.raises(LoraFlagError, match=message) as info:
        parse_sha256_flags(values, [LoraSpec(name="ink", path=URI)])
    assert str(info.value).startswith("--lora-sha256 ")


@pytest.mark.parametrize(
    ("value", "path", "scale"),
    [(f"ink={URI}", URI, 1.0), (f"ink={URI}:0.5", URI, 0.5), ("ink=rel/dir:2", "rel/dir", 2.0)],
)
def test_a_uri_s_own_colon_is_not_a_scale(value: str, path: str, scale: float) -> None:
    assert parse_lora_flag(value) == LoraSpec(name="ink", path=path, scale=scale)


def test_only_local_paths_are_checked_before_the_model() -> None:
    check_local([LoraSpec(name="ink", path=URI)])  # fetched later, with the weights
    with pytest.raises(LoraFlagError, match="--lora ink: /nowhere does not exist"):
        check_local([LoraSpec(name="ink", path="/nowhere")])


# --- a real server ---------------------------------------------------------------------


def test_start_up_refuses_an_adapter_with_another_digest(
    tiny_flux_dir: Path, adapter_file: Path, s3_env: dict[str, str]
) -> None:
    """Before the model loads: the service never becomes ready, the process exits (and
    the canary whose pod never gets ready is rolled back)."""
    from flux_server.service.core import GenerationService
    from flux_server.settings import ServerSettings

    settings = ServerSettings(
        model=str(tiny_flux_dir), lora=(f"ink={URI}",), lora_sha256=(f"ink={'f' * 64}",)
    )
    service = GenerationService(settings)
    with pytest.raises(LoraDigestError) as info:
        asyncio.run(service.start())
    assert str(info.value) == (
        f"adapter 'ink' from {URI}: sha256 {_sha256(adapter_file)} differs from the "
        f"expected {'f' * 64} (--lora-sha256); refusing to serve it"
    )
    assert service.runner.engine is None and not service.admission.ready


def test_a_server_serves_a_verified_s3_adapter(
    tiny_flux_dir: Path, adapter_file: Path, s3_env: dict[str, str], tmp_path: Path
) -> None:
    server = start_server(
        tiny_flux_dir,
        tmp_path,
        ["--lora", f"ink={URI}:1", "--lora-sha256", f"ink={_sha256(adapter_file)}"],
        env_overrides=s3_env,
    )
    try:
        server.wait_ready()
        body = {"prompt": "a poster", "seed": 3}
        headers = {"Accept": "application/json"}
        with httpx.Client(base_url=server.url, timeout=120, headers=headers) as client:
            plain = client.post("/generate", json=body)
            ink = client.post("/generate", json={**body, "adapters": [{"name": "ink"}]})
        assert plain.status_code == ink.status_code == 200, (plain.text, ink.text)
        assert plain.json()["images"][0]["b64"] != ink.json()["images"][0]["b64"]
        verified = [r for r in server.log_records() if r.get("message") == "lora adapter verified"]
        assert verified, server.log()
    finally:
        server.stop()
