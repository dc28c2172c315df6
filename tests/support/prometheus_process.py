"""A real Prometheus (Debian's ``/usr/bin/prometheus``) on a free port, for the tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from server_process import free_port

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"

T = TypeVar("T")


def prometheus_binary() -> str | None:
    """The Prometheus server binary, or None (install Debian's `prometheus` package)."""
    return PROMETHEUS if Path(PROMETHEUS).is_file() else shutil.which("prometheus")


def promtool_binary() -> str | None:
    return PROMTOOL if Path(PROMTOOL).is_file() else shutil.which("promtool")


@dataclass
class PrometheusProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for(self, what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
        """Poll ``check`` until it returns something other than None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log()}")
            result = check()
            if result is not None:
                return result
            time.sleep(0.2)
        raise AssertionError(f"Prometheus: {what} not seen after {timeout}s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_prometheus(
    binary: str, work_dir: Path, scrape_configs: Sequence[dict[str, Any]]
) -> PrometheusProcess:
    """Prometheus scraping every second, ready to answer queries when this returns."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": list(scrape_configs),
    }
    config_path = work_dir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = work_dir / "prometheus.log"
    command = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={work_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    prometheus = PrometheusProcess(process, port, log_path)

    def ready() -> bool | None:
        try:
            return httpx.get(f"{prometheus.url}/-/ready", timeout=2).status_code == 200 or None
        except httpx.TransportError:
            return None

    prometheus.wait_for("/-/ready", ready)
    return prometheus
