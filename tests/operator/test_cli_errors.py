"""The cluster commands fail with one clear line, never a traceback, when there is no
cluster configuration or the API server cannot be reached."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from flux_operator.cli import main


def _unreachable_kubeconfig(tmp_path: Path) -> Path:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["history", "flux-dev"],
        ["rollback", "flux-dev", "--to", "v1.4.1"],
        ["run", "--health-port", "0"],
        ["promote", "flux-dev"],
        ["abort", "flux-dev"],
    ],
    ids=["history", "rollback", "run", "promote", "abort"],
)
def test_missing_kubeconfig_is_one_clear_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert main([*argv, "--kubeconfig", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: no Kubernetes configuration: kubeconfig {missing}: no such file\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["history", "flux-dev"],
        ["rollback", "flux-dev", "--to", "v1.4.1"],
        ["promote", "flux-dev"],
        ["abort", "flux-dev"],
    ],
)
def test_unreachable_api_server_is_one_clear_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = _unreachable_kubeconfig(tmp_path)
    assert main([*argv, "--kubeconfig", str(kubeconfig)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: cannot reach the Kubernetes API: ")


@pytest.mark.parametrize("metadata", [None, "oops", {"namespace": "studio"}, {"name": 7}])
def test_render_of_a_resource_without_a_name_says_so(
    metadata: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resource: dict[str, object] = {
        "apiVersion": "fluxserve.dev/v1alpha1",
        "kind": "FluxDeployment",
        "spec": {"release": "v1", "model": {"id": "m", "source": {"hub": {}}}},
    }
    if metadata is not None:
        resource["metadata"] = metadata
    path = tmp_path / "fxd.yaml"
    path.write_text(yaml.safe_dump(resource))
    assert main(["render", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err
        == "error: FluxDeployment without a metadata.name (every child is named after it)\n"
    )
