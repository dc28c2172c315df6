"""The Dockerfiles, checked without a Docker engine: BuildKit's own parser reads them,
hadolint lints them, and the build context is what .dockerignore lets through."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
IMAGES = {
    "server": (ROOT / "server" / "Dockerfile", "flux_server"),
    "operator": (ROOT / "operator" / "Dockerfile", "flux_operator"),
}
OCI_LABELS = {
    "org.opencontainers.image.version": "${VERSION}",
    "org.opencontainers.image.revision": "${REVISION}",
}


def _final_stage(path: Path) -> list[dockerfile.Command]:
    commands = dockerfile.parse_file(str(path))
    last_from = max(i for i, c in enumerate(commands) if c.cmd == "FROM")
    return list(commands[last_from:])


def _values(stage: list[dockerfile.Command], cmd: str) -> list[tuple[str, ...]]:
    return [c.value for c in stage if c.cmd == cmd]


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    return {values[i]: values[i + 1].strip('"') for i in range(0, len(values), 2)}


@pytest.mark.parametrize("name", IMAGES)
def test_hadolint_clean(name: str) -> None:
    path, _ = IMAGES[name]
    proc = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", IMAGES)
def test_runs_as_a_fixed_non_root_user(name: str) -> None:
    stage = _final_stage(IMAGES[name][0])
    (user,) = _values(stage, "USER")[-1:]
    uid = user[0].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "runAsNonRoot needs a numeric, non-zero uid"


@pytest.mark.parametrize("name", IMAGES)
def test_entrypoint_runs_the_package(name: str) -> None:
    path, module = IMAGES[name]
    stage = _final_stage(path)
    (entrypoint,) = [c for c in stage if c.cmd == "ENTRYPOINT"]
    assert entrypoint.json, "exec form, so the process gets SIGTERM directly"
    assert entrypoint.value[1:] == ("-m", module)
    assert entrypoint.value[0] in ("python", "python3")


@pytest.mark.parametrize("name", IMAGES)
def test_oci_labels_carry_version_and_revision(name: str) -> None:
    stage = _final_stage(IMAGES[name][0])
    labels: dict[str, str] = {}
    for value in _values(stage, "LABEL"):
        labels.update(_pairs(value))
    for key, expected in OCI_LABELS.items():
        assert labels.get(key) == expected, key
    declared = {v[0].split("=")[0] for v in _values(stage, "ARG")}
    assert {"VERSION", "REVISION"} <= declared, "ARGs must be declared in the final stage"


def test_server_ports_and_model_cache() -> None:
    stage = _final_stage(IMAGES["server"][0])
    exposed = {p for v in _values(stage, "EXPOSE") for p in v}
    assert {"8080", "50051", "9090"} <= exposed  # HTTP, gRPC, metrics
    env: dict[str, str] = {}
    for value in _values(stage, "ENV"):
        env.update(_pairs(value))
    cache = env["HF_HOME"]
    setup = " ".join(v[0] for v in _values(stage, "RUN"))
    assert f"mkdir -p {cache}" in setup and "chown -R 10001:10001 /cache" in setup


def test_operator_exposes_its_health_port() -> None:
    from flux_operator.settings import OperatorSettings

    stage = _final_stage(IMAGES["operator"][0])
    exposed = {p for v in _values(stage, "EXPOSE") for p in v}
    assert exposed == {str(OperatorSettings().health_port)}


def test_server_base_is_cuda_with_a_cuda_torch() -> None:
    commands = dockerfile.parse_file(str(IMAGES["server"][0]))
    args = dict(c.value[0].split("=", 1) for c in commands if c.cmd == "ARG" and "=" in c.value[0])
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:") and "runtime" in args["CUDA_IMAGE"]
    assert "download.pytorch.org/whl/cu" in args["TORCH_INDEX_URL"]


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches a path (or a parent) decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if any(
            fnmatch.fnmatchcase(p, pat) or fnmatch.fnmatchcase(p, f"**/{pat}") for p in prefixes
        ):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_builds_copy_and_nothing_else() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path, _ in IMAGES.values():
        for copy in dockerfile.parse_file(str(path)):
            if copy.cmd != "COPY" or any(f.startswith("--from") for f in copy.flags):
                continue
            for src in copy.value[:-1]:
                assert (ROOT / src).exists(), f"{path.name}: COPY {src}: no such file"
                assert not _ignored(src, patterns), f".dockerignore drops {src}"
    for private in (".git/config", ".venv/bin/python", ".tools/bin/helm", "tests/chart/x.py"):
        assert _ignored(private, patterns), f"{private} would be sent to the build"
    assert _ignored("server/flux_server/__pycache__/x.pyc", patterns)
    assert not _ignored("server/flux_server/execution/engine.py", patterns)


def _bin_with(tmp_path: Path, *tools: str) -> Path:
    """A PATH directory holding only these tools (links to the real ones)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"needs {tool} on PATH")
        (bin_dir / tool).symlink_to(found)
    return bin_dir


def test_make_images_without_a_docker_cli_fails_and_says_so(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("needs make")
    # A PATH with bash alone: no docker CLI, even on a machine that has one.
    proc = subprocess.run(
        [make, "--no-print-directory", "images", "TAG=v1.2.3"],
        env={"PATH": str(_bin_with(tmp_path, "bash"))},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "images: no docker CLI on PATH: install Docker" in proc.stderr
    assert "fluxserve-{server,operator}:v1.2.3" in proc.stderr


def test_build_images_without_a_docker_engine_fails_and_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(ROOT / "hack" / "build-images.sh")],
        # The real docker CLI, pointed at an engine that is not there.
        env={
            "PATH": str(_bin_with(tmp_path, "docker")),
            "TAG": "v1.2.3",
            "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",
            "HOME": str(tmp_path),
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "no Docker engine answers at unix://" in proc.stderr
    assert "start the daemon" in proc.stderr


def test_server_image_fits_the_pods_the_operator_renders() -> None:
    """The uid the operator's pods run as, the cache it mounts and the image it names
    are the server image's."""
    from flux_operator.render import Owner, desired_revision, render_deployment
    from flux_operator.spec import FluxDeploymentSpec

    spec = FluxDeploymentSpec.model_validate(
        {"release": "v1.2.3", "model": {"id": "m", "source": {"hub": {}}}}
    )
    owner = Owner(name="flux", namespace="ns", uid="u")
    pod = render_deployment(owner, spec, desired_revision(owner, spec))["spec"]["template"]
    container = pod["spec"]["containers"][0]
    stage = _final_stage(IMAGES["server"][0])
    (user,) = _values(stage, "USER")[-1:]
    assert str(pod["spec"]["securityContext"]["runAsUser"]) == user[0].split(":")[0]
    image_env: dict[str, str] = {}
    for value in _values(stage, "ENV"):
        image_env.update(_pairs(value))
    pod_env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert pod_env.get("HF_HOME", image_env["HF_HOME"]) == image_env["HF_HOME"]
    # release.yaml pushes <registry>/fluxserve-server:<tag>; the operator's default image.
    assert container["image"] == "ghcr.io/fluxserve/fluxserve-server:v1.2.3"
    assert "command" not in container, "the image's entrypoint runs the server"
