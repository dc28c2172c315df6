"""The alert rules deploy/monitoring ships, checked and unit-tested by Prometheus's own
``promtool`` (Debian's ``prometheus`` package): ``check rules`` on the PrometheusRule's
groups, ``test rules`` on deploy/monitoring/prometheusrule.test.yaml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_process import promtool_binary

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
UNIT_TESTS = MONITORING / "prometheusrule.test.yaml"


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = promtool_binary()
    if binary is None:
        pytest.skip(
            "no promtool (/usr/bin/promtool): `apt-get install prometheus` or `make tools` "
            "to check the alert rules with Prometheus's own tool"
        )
    return binary


@pytest.fixture()
def rules_dir(tmp_path: Path) -> Path:
    """The PrometheusRule's spec as a plain rules file, beside a copy of the unit tests."""
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return tmp_path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules(promtool: str, rules_dir: Path) -> None:
    result = _run(promtool, "check", "rules", "rules.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = sum(
        len(g["rules"]) for g in yaml.safe_load((rules_dir / "rules.yaml").read_text())["groups"]
    )
    assert f"SUCCESS: {rules} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool: str, rules_dir: Path) -> None:
    result = _run(promtool, "test", "rules", UNIT_TESTS.name, cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    covered = {"FluxserveHighErrorRatio", "FluxserveNoReadyPods", "FluxserveScrapeFailing",
               "FluxserveCanaryErrorsAboveStable", "FluxserveAuditVolumeFilling"}  # fmt: skip
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert covered <= alerts
    assert covered <= fired


def test_a_wrong_expectation_fails_promtool(promtool: str, rules_dir: Path) -> None:
    # Guards the test above: promtool really compares what fires with what is expected.
    tests = yaml.safe_load((rules_dir / UNIT_TESTS.name).read_text())
    tests["tests"][0]["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"]["severity"] = "info"
    (rules_dir / "broken.test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = _run(promtool, "test", "rules", "broken.test.yaml", cwd=rules_dir)
    assert result.returncode != 0
