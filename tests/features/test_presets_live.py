"""Style presets, /metrics and an open server, through a running server over real
sockets: a preset changed the way kubelet updates a mounted ConfigMap is used by the
next request, and the audit log shows the expanded prompt."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flux_client.presets import StylePreset, presets_to_files

from .metric_names import SERVER_METRICS
from .test_server_features import RunningServer, _audit_lines, _settings, _wait_for


def publish(mount: Path, presets: dict[str, StylePreset], version: int) -> None:
    """Write presets as kubelet does for a ConfigMap volume: the files live in a
    timestamped folder, ``..data`` links to it, each key links through ``..data``; an
    update writes a new folder and swaps ``..data`` atomically."""
    folder = mount / f"..2026_01_01_00_00_0{version}"
    folder.mkdir()
    for name, text in presets_to_files(presets).items():
        (folder / name).write_text(text, "utf-8")
        if not (mount / name).is_symlink():
            os.symlink(f"..data/{name}", mount / name)
    os.symlink(folder.name, mount / "..data_tmp")
    os.replace(mount / "..data_tmp", mount / "..data")


@pytest.fixture(scope="module")
def open_server(
    tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("open")
    mount = root / "presets"
    mount.mkdir()
    publish(mount, {"ink": StylePreset(prompt_template="ink drawing of {prompt}", steps=3)}, 1)
    audit = root / "audit.jsonl"
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    service_log = logging.getLogger("flux_server")  # whichever module warns
    service_log.addHandler(handler)
    try:
        server = RunningServer(
            _settings(tiny_flux_dir, presets_dir=mount, audit_log=str(audit))
        ).start()
    finally:
        service_log.removeHandler(handler)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            yield {"client": client, "mount": mount, "audit": audit, "records": records}
    finally:
        server.stop()


def test_an_open_server_warns_at_start(open_server: dict[str, Any]) -> None:
    warnings = [r.getMessage() for r in open_server["records"] if r.levelno == logging.WARNING]
    assert any("--api-keys" in m and "open" in m for m in warnings), warnings


def _generate(client: httpx.Client, request_id: str, **body: Any) -> httpx.Response:
    return client.post(
        "/generate",
        json={"prompt": "a cat", **body},
        headers={"Accept": "application/json", "X-Request-Id": request_id},
    )


def _audited(audit: Path, request_id: str) -> dict[str, Any]:
    return _wait_for(
        lambda: next((x for x in _audit_lines(audit) if x["request_id"] == request_id), None),
        f"the audit line of {request_id}",
    )


def test_a_preset_updated_on_disk_is_used_without_a_restart(open_server: dict[str, Any]) -> None:
    client: httpx.Client = open_server["client"]
    assert _generate(client, "ink-1", style_preset="ink").status_code == 200
    first = _audited(open_server["audit"], "ink-1")
    assert first["prompt"] == "ink drawing of a cat" and first["params"]["steps"] == 3
    # A field the request sets wins over the preset's default.
    assert _generate(client, "ink-2", style_preset="ink", steps=2).status_code == 200
    assert _audited(open_server["audit"], "ink-2")["params"]["steps"] == 2

    publish(
        open_server["mount"],
        {
            "ink": StylePreset(prompt_template="{prompt}, in ink", steps=3),
            "neon": StylePreset(prompt_template="{prompt}, neon"),
        },
        2,
    )

    def listed() -> bool:
        names = [p["name"] for p in client.get("/presets").json()["presets"]]
        return names == ["ink", "neon"]

    _wait_for(listed, "the new presets on GET /presets")
    assert client.get("/v1/presets").json() == client.get("/presets").json()
    assert _generate(client, "ink-3", style_preset="ink").status_code == 200
    assert _audited(open_server["audit"], "ink-3")["prompt"] == "a cat, in ink"

    unknown = _generate(client, "ink-4", style_preset="baroque")
    assert unknown.status_code == 400
    error = unknown.json()["error"]
    assert error["field"] == "style_preset"
    assert "ink" in error["message"] and "neon" in error["message"]


def test_metrics_parse_and_carry_every_name(open_server: dict[str, Any]) -> None:
    client: httpx.Client = open_server["client"]
    assert _generate(client, "metrics-1", seed=3).status_code == 200
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    missing = SERVER_METRICS - set(samples)
    assert not missing, f"/metrics lacks {sorted(missing)}"
    assert samples["fluxserve_model_load_seconds"] > 0
    assert samples["fluxserve_images_generated_total"] >= 1


def test_a_swap_to_files_of_the_same_size_and_time_is_seen(tmp_path: Path) -> None:
    from flux_server.requests.presets_store import PresetStore

    publish(tmp_path, {"ink": StylePreset(prompt_template="{prompt}, in ink")}, 1)
    store = PresetStore(tmp_path, interval=0)
    old = (tmp_path / "ink.json").resolve()
    publish(tmp_path, {"ink": StylePreset(prompt_template="{prompt}, in oil")}, 2)
    new = (tmp_path / "ink.json").resolve()
    assert new != old
    stamp = old.stat().st_mtime_ns
    os.utime(new, ns=(stamp, stamp))
    assert new.stat().st_size == old.stat().st_size
    assert store.get()["ink"].expand("a cat") == "a cat, in oil"


def _png(size: int = 64) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_edits_and_questions_are_audited(
    tiny_flux_dir: Path, tiny_vqa_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("vision-audit")
    audit = root / "audit.jsonl"
    settings = _settings(
        tiny_flux_dir, enable_editing=True, vqa_model=str(tiny_vqa_dir), audit_log=str(audit)
    )
    server = RunningServer(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            image = {"image": ("in.png", _png(), "image/png")}
            calls = {
                "edit-ok": client.post(
                    "/edit",
                    files=image,
                    data={"prompt": "a red house", "steps": "2", "seed": "1"},
                    headers={"X-Request-Id": "edit-ok"},
                ),
                "edit-bad": client.post(
                    "/edit",
                    files={"image": ("in.png", b"not an image", "image/png")},
                    data={"prompt": "a red house"},
                    headers={"X-Request-Id": "edit-bad"},
                ),
                "vqa-ok": client.post(
                    "/vqa",
                    files=image,
                    data={"question": "what colour is it?", "max_tokens": "4"},
                    headers={"X-Request-Id": "vqa-ok"},
                ),
                "vqa-blocked": client.post(
                    "/vqa",
                    files=image,
                    data={"question": "is she n.u.d.e?", "max_tokens": "4"},
                    headers={"X-Request-Id": "vqa-blocked"},
                ),
            }
    finally:
        server.stop()
    assert {k: r.status_code for k, r in calls.items()} == {
        "edit-ok": 200,
        "edit-bad": 400,
        "vqa-ok": 200,
        "vqa-blocked": 400,
    }
    lines = {x["request_id"]: x for x in _audit_lines(audit)}
    assert len(_audit_lines(audit)) == len(lines) == 4  # one line per request
    assert lines["edit-ok"]["decision"] == "accepted"
    assert lines["edit-ok"]["prompt"] == "a red house" and lines["edit-ok"]["params"]["seed"] == 1
    assert (lines["edit-bad"]["decision"], lines["edit-bad"]["status"]) == ("rejected", 400)
    assert "image" in lines["edit-bad"]["detail"]
    assert lines["vqa-ok"]["decision"] == "accepted"
    assert lines["vqa-ok"]["prompt"] == "what colour is it?"
    assert lines["vqa-ok"]["params"]["max_tokens"] == 4
    blocked = lines["vqa-blocked"]
    assert (blocked["decision"], blocked["reason"], blocked["detail"]) == (
        "rejected",
        "blocklist",
        "nude",
    )
