"""Fixtures for the chart tests: the pinned helm binary that `make tools` installs."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fluxserve-operator"
HELM = ROOT / ".tools" / "bin" / "helm"
KUBE_VERSION = "1.33.0"
"""The Kubernetes version the chart is rendered for and validated against."""


@dataclass(frozen=True)
class Helm:
    """Runs the real helm binary against the chart."""

    binary: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def template(
        self,
        values_files: Sequence[Path] = (),
        sets: Sequence[str] = (),
        release: str = "fluxserve-operator",
        namespace: str = "fluxserve-system",
    ) -> list[dict[str, Any]]:
        args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds"]
        args += ["--kube-version", KUBE_VERSION]
        for f in values_files:
            args += ["--values", str(f)]
        for s in sets:
            args += ["--set", s]
        proc = self.run(*args)
        assert proc.returncode == 0, proc.stderr
        return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="session")
def helm() -> Helm:
    if not HELM.is_file():
        pytest.skip(f"helm is not installed at {HELM.relative_to(ROOT)}: run `make tools`")
    return Helm(HELM)
