"""The recompile alert, evaluated by Prometheus' own rule engine (``promtool test
rules``) on series that rise after ready and on series that stay flat."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'fluxserve_recompiles_total{namespace="inference", pod="a"}'
        values: '0x10 1x20'
      - series: 'fluxserve_recompiles_total{namespace="inference", pod="b"}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 9m
        alertname: FluxserveRecompiling
        exp_alerts: []
      - eval_time: 14m
        alertname: FluxserveRecompiling
        exp_alerts:
          - exp_labels: {severity: warning, namespace: inference, pod: a}
            exp_annotations:
              summary: "fluxserve pod inference/a recompiled the transformer after it became ready"
              description: "{description}"
"""


@pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool is not installed")
def test_the_recompile_alert_fires_on_a_rise_and_only_then(tmp_path: Path) -> None:
    rule = yaml.safe_load((ROOT / "deploy/monitoring/prometheusrule.yaml").read_text())
    groups = rule["spec"]["groups"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    alert = next(r for g in groups for r in g["rules"] if r.get("alert") == "FluxserveRecompiling")
    tests = TESTS.replace("{description}", alert["annotations"]["description"])
    (tmp_path / "tests.yaml").write_text(tests)
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
