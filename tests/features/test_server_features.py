"""The production features through a running server, over real sockets: API keys, the
safety filter and its audit trail, the result cache in memory and in a real Redis that
dies and comes back, LoRA adapters chosen per request."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flux_client.presets import StylePreset, presets_to_files
from flux_server.admission import keys
from flux_server.admission.audit_ecs import parse_line
from flux_server.settings import ServerSettings

from .redis_server import RedisServer

BLOCKED_IN_DISGUISE = "a statue, n.u.d.3, in a garden"


class RunningServer:
    """A ``FluxServer`` on its own event loop in a thread, on free ports."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.server: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="flux-server", daemon=True)

    def _main(self) -> None:
        from flux_server.server import FluxServer

        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            self.server = FluxServer(self.settings)
            await self.server.run()

        try:
            asyncio.run(serve())
        except BaseException as exc:  # surfaced by start() / the test
            self.error = exc

    def start(self) -> RunningServer:
        self._thread.start()
        deadline = time.monotonic() + 120
        while self.server is None or not self.server.http_port:
            assert self.error is None, f"server failed: {self.error!r}"
            assert self._thread.is_alive(), "server thread exited"
            assert time.monotonic() < deadline, "server did not listen"
            time.sleep(0.02)
        with httpx.Client(base_url=self.url) as client:
            while client.get("/readyz").status_code != 200:
                assert self._thread.is_alive(), "server thread exited"
                assert time.monotonic() < deadline, "server never became ready"
                time.sleep(0.05)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    def stop(self) -> None:
        if self.loop is not None and self.server is not None:
            self.loop.call_soon_threadsafe(self.server.request_stop)
        self._thread.join(timeout=60)


def _settings(model: Path, **overrides: Any) -> ServerSettings:
    return ServerSettings.model_validate(
        {
            "model": str(model),
            "host": "127.0.0.1",
            "http_port": 0,
            "grpc_port": 0,
            "metrics_port": 0,
            "warmup": False,
            "default_width": 64,
            "default_height": 64,
            "default_steps": 2,
            "max_delay_ms": 0,
            "release": "v0.0.1-test",
            "log_level": "warning",
            **overrides,
        }
    )


def _new_key(path: Path, user: str, *flags: str) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert keys.main(["add", user, *flags, "--file", str(path)]) == 0
    return out.getvalue().strip()


def _metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 when absent), parsed by prometheus_client."""
    text = client.get("/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _audit_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [parse_line(line) for line in path.read_text("utf-8").splitlines()]


def _wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def lora_dir(tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diffusers import FluxPipeline

    from flux_server.execution.lora import write_tiny_lora

    pipe = FluxPipeline.from_pretrained(tiny_flux_dir)
    return write_tiny_lora(pipe, tmp_path_factory.mktemp("lora") / "ink", "ink", seed=5).parent


@pytest.fixture(scope="module")
def secured(
    tiny_flux_dir: Path, lora_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A server with API keys, an extra blocklist, an audit log, a memory cache, a LoRA."""
    root = tmp_path_factory.mktemp("secured")
    keys_file = root / "keys"
    alice = _new_key(keys_file, "alice", "--priority")
    bob = _new_key(keys_file, "bob")
    blocklist = root / "blocklist.txt"
    blocklist.write_text("# house rules\nzebra crossing\n", "utf-8")
    audit = root / "audit.jsonl"
    presets = root / "presets"
    presets.mkdir()
    inked = StylePreset.model_validate({"lora": {"name": "ink", "scale": 1.0}})
    for name, text in presets_to_files({"inked": inked}).items():
        (presets / name).write_text(text, "utf-8")
    server = RunningServer(
        _settings(
            tiny_flux_dir,
            presets_dir=presets,
            api_keys=keys_file,
            blocklist=blocklist,
            audit_log=str(audit),
            # Failed authentications past an address's first are summed up per interval.
            audit_failed_auth_interval=0.5,
            cache_bytes=16 * 1024 * 1024,
            lora=(f"ink={lora_dir}:1.0",),
        )
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            yield {
                "client": client,
                "server": server,
                "alice": alice,
                "bob": bob,
                "audit": audit,
                "lora_dir": lora_dir,
            }
    finally:
        server.stop()


def _auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Accept": "application/json", **headers}


def test_requests_need_a_valid_key(secured: dict[str, Any]) -> None:
    client: httpx.Client = secured["client"]
    missing = client.post("/generate", json={"prompt": "a cat"})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthenticated"
    wrong = client.post("/generate", json={"prompt": "a cat"}, headers=_auth("fxs_nope"))
    assert wrong.status_code == 401
    rid = missing.headers.get("x-request-id")

    def refusals() -> list[dict[str, Any]]:
        return [
            line
            for line in _audit_lines(secured["audit"])
            if line["decision"] == "rejected" and line.get("reason") == "unauthenticated"
        ]

    # The first at once (with its request id), the second in the interval's summary.
    _wait_for(lambda: sum(line.get("count", 1) for line in refusals()) >= 2, "both counted")
    if rid:
        assert any(line["request_id"] == rid for line in refusals())


def test_blocked_prompt_in_disguise_is_refused_and_audited(secured: dict[str, Any]) -> None:
    client: httpx.Client = secured["client"]
    before = _metric(client, "fluxserve_safety_rejections_total", reason="blocklist")
    response = client.post(
        "/generate",
        json={"prompt": BLOCKED_IN_DISGUISE, "seed": 1},
        headers=_auth(secured["alice"], **{"X-Request-Id": "disguised-1"}),
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "prompt"
    assert _metric(client, "fluxserve_safety_rejections_total", reason="blocklist") == before + 1

    line = _wait_for(
        lambda: next(
            (x for x in _audit_lines(secured["audit"]) if x["request_id"] == "disguised-1"), None
        ),
        "the audit line",
    )
    assert line["decision"] == "rejected" and line["reason"] == "blocklist"
    assert line["user"] == "alice" and line["prompt"] == BLOCKED_IN_DISGUISE
    assert line["status"] == 400 and line["detail"] == "nude"
    assert "blocklist" in error["message"]
    assert [x["request_id"] for x in _audit_lines(secured["audit"])].count("disguised-1") == 1


def test_every_failed_request_has_one_audit_line(secured: dict[str, Any]) -> None:
    client: httpx.Client = secured["client"]
    too_long = client.post(
        "/generate",
        json={"prompt": "a cat", "steps": 1000},
        headers=_auth(secured["bob"], **{"X-Request-Id": "too-many-steps"}),
    )
    assert too_long.status_code == 422
    not_json = client.post(
        "/generate",
        content=b'{"prompt": ',
        headers=_auth(
            secured["bob"], **{"X-Request-Id": "not-json", "Content-Type": "application/json"}
        ),
    )
    assert not_json.status_code == 400

    def lines(request_id: str) -> list[dict[str, Any]]:
        return [x for x in _audit_lines(secured["audit"]) if x["request_id"] == request_id]

    (steps,) = _wait_for(lambda: lines("too-many-steps"), "the audit line of too-many-steps")
    assert (steps["decision"], steps["reason"], steps["status"]) == (
        "rejected",
        "invalid_argument",
        422,
    )
    assert steps["user"] == "bob" and "steps" in steps["detail"]
    (body,) = _wait_for(lambda: lines("not-json"), "the audit line of not-json")
    assert (body["decision"], body["reason"], body["status"]) == (
        "rejected",
        "malformed_request",
        400,
    )


def test_the_blocklist_file_extends_the_default_list(secured: dict[str, Any]) -> None:
    response = secured["client"].post(
        "/generate",
        json={"prompt": "a Z E B R A  crossing at night"},
        headers=_auth(secured["bob"]),
    )
    assert response.status_code == 400


def test_seeded_repeat_is_a_cache_hit_in_memory(secured: dict[str, Any]) -> None:
    client: httpx.Client = secured["client"]
    body = {"prompt": "a lighthouse at dusk", "seed": 1234, "num_images": 2}
    hits = _metric(client, "fluxserve_cache_hits_total")
    first = client.post("/generate", json=body, headers=_auth(secured["bob"]))
    second = client.post("/generate", json=body, headers=_auth(secured["bob"]))
    assert first.status_code == second.status_code == 200
    assert first.json()["cache_hit"] is False and second.json()["cache_hit"] is True
    assert [i["b64"] for i in first.json()["images"]] == [i["b64"] for i in second.json()["images"]]
    assert _metric(client, "fluxserve_cache_hits_total") == hits + 1

    audited = [
        line
        for line in _audit_lines(secured["audit"])
        if line["request_id"] in {first.json()["request_id"], second.json()["request_id"]}
    ]
    assert sorted(line["cache_hit"] for line in audited) == [False, True]
    assert all(line["user"] == "bob" and line["decision"] == "accepted" for line in audited)


def test_unseeded_requests_are_not_cached(secured: dict[str, Any]) -> None:
    client: httpx.Client = secured["client"]
    body = {"prompt": "a lighthouse at dawn"}
    answers = [client.post("/generate", json=body, headers=_auth(secured["bob"])) for _ in range(2)]
    assert [a.json()["cache_hit"] for a in answers] == [False, False]


def test_only_priority_keys_get_the_priority_lane(secured: dict[str, Any]) -> None:
    client: httpx.Client = secured["client"]
    alice = client.post(
        "/generate",
        json={"prompt": "a red kite"},
        headers=_auth(secured["alice"], **{"X-Priority": "high", "X-Request-Id": "alice-high"}),
    )
    assert alice.status_code == 200
    bob = client.post(
        "/generate",
        json={"prompt": "a red kite"},
        headers=_auth(secured["bob"], **{"X-Priority": "high", "X-Request-Id": "bob-high"}),
    )
    # Served, in the normal lane, and the downgrade is in the audit log.
    assert bob.status_code == 200

    def audited(request_id: str) -> dict[str, Any]:
        return _wait_for(
            lambda: next(
                (x for x in _audit_lines(secured["audit"]) if x["request_id"] == request_id), None
            ),
            f"the audit line of {request_id}",
        )

    line = audited("bob-high")
    assert line["decision"] == "accepted" and line["reason"] == "priority_denied"
    assert line["params"]["priority"] is False
    line = audited("alice-high")
    assert line["params"]["priority"] is True and "reason" not in line


async def test_a_key_without_priority_cannot_jump_the_queue(secured: dict[str, Any]) -> None:
    finished: list[str] = []
    async with httpx.AsyncClient(base_url=secured["server"].url, timeout=300) as client:

        async def call(name: str, body: dict[str, Any], key: str, **headers: str) -> None:
            response = await client.post(
                "/generate", json={"prompt": name, **body}, headers=_auth(key, **headers)
            )
            assert response.status_code == 200, response.text
            finished.append(name)

        async def queue_depth() -> float:
            text = (await client.get("/metrics")).text
            return sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "fluxserve_queue_depth"
            )

        # Distinct step counts: no two of these can share a batch.
        normal = [
            asyncio.create_task(
                call(f"n{i}", {"width": 256, "height": 256, "steps": 8 + i}, secured["bob"])
            )
            for i in range(6)
        ]
        async with asyncio.timeout(120):
            while await queue_depth() < 4:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        high = {"X-Priority": "high"}
        bob = asyncio.create_task(call("bob-high", {"steps": 2}, secured["bob"], **high))
        alice = asyncio.create_task(call("alice-high", {"steps": 3}, secured["alice"], **high))
        await asyncio.gather(*normal, bob, alice)
    # At least four normal requests were waiting when both arrived: alice's key goes
    # ahead of them (at most the running one and one racing in finish first), bob's
    # waits its turn behind them.
    assert finished.index("alice-high") <= 2, finished
    assert finished.index("bob-high") >= 4, finished


def test_adapters_are_chosen_per_request(secured: dict[str, Any]) -> None:
    client: httpx.Client = secured["client"]
    base = {"prompt": "a lighthouse", "seed": 99}
    plain = client.post("/generate", json=base, headers=_auth(secured["bob"]))
    ink = client.post(
        "/generate",
        json={**base, "adapters": [{"name": "ink", "scale": 1.0}]},
        headers=_auth(secured["bob"]),
    )
    assert plain.status_code == ink.status_code == 200
    assert plain.json()["images"][0]["b64"] != ink.json()["images"][0]["b64"]
    # The adapter set is part of the cache key: the plain image again is not the ink one.
    again = client.post("/generate", json=base, headers=_auth(secured["bob"]))
    assert again.json()["images"][0]["b64"] == plain.json()["images"][0]["b64"]

    # A preset that names the adapter applies it: the same image, and the same cache
    # entry, since the key is made after the preset is expanded.
    preset = client.post(
        "/generate", json={**base, "style_preset": "inked"}, headers=_auth(secured["bob"])
    )
    assert preset.json()["images"][0]["b64"] == ink.json()["images"][0]["b64"]
    assert preset.json()["cache_hit"] is True

    # The weights' digest is part of the key: new weights under the name miss.
    from flux_server.execution.lora import LoraSpec, fingerprint

    service = secured["server"].server.service
    ink_spec = LoraSpec(name="ink", path=str(secured["lora_dir"]))
    assert service.runner.adapter_versions == {"ink": fingerprint(ink_spec)}

    unknown = client.post(
        "/generate",
        json={**base, "adapters": [{"name": "mist"}]},
        headers=_auth(secured["bob"]),
    )
    assert unknown.status_code == 400
    error = unknown.json()["error"]
    assert error["field"] == "adapters[0].name" and "ink" in error["message"]


def test_redis_cache_survives_redis_dying_and_coming_back(
    tiny_flux_dir: Path, redis_server: RedisServer
) -> None:
    server = RunningServer(_settings(tiny_flux_dir, redis_url=redis_server.url)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            accept = {"Accept": "application/json"}
            body = {"prompt": "a harbour in fog", "seed": 7}
            first = client.post("/generate", json=body, headers=accept).json()
            second = client.post("/generate", json=body, headers=accept).json()
            assert (first["cache_hit"], second["cache_hit"]) == (False, True)
            assert first["images"][0]["b64"] == second["images"][0]["b64"]
            assert _metric(client, "fluxserve_cache_hits_total") == 1
            assert _metric(client, "fluxserve_cache_misses_total") == 1
            png = base64.b64decode(second["images"][0]["b64"])
            assert png.startswith(b"\x89PNG")

            redis_server.kill()
            errors = _metric(client, "fluxserve_cache_errors_total")
            for seed in (8, 8):
                down = client.post("/generate", json={**body, "seed": seed}, headers=accept)
                assert down.status_code == 200 and down.json()["cache_hit"] is False
            assert _metric(client, "fluxserve_cache_errors_total") > errors

            redis_server.start()  # empty: nothing was persisted
            revived = {**body, "seed": 9}

            def hit_again() -> bool:
                answer = client.post("/generate", json=revived, headers=accept)
                assert answer.status_code == 200
                return bool(answer.json()["cache_hit"])

            _wait_for(hit_again, "the cache to work again after Redis came back", timeout=60)
    finally:
        server.stop()


def test_grpc_carries_keys_safety_and_cache(secured: dict[str, Any]) -> None:
    import grpc

    from flux_client.wire import pb, pb_grpc

    server: Any = secured["server"]
    with grpc.insecure_channel(f"127.0.0.1:{server.server.grpc_port}") as channel:
        stub = pb_grpc.FluxServiceStub(channel)
        bob = (("authorization", f"Bearer {secured['bob']}"),)

        def generate(prompt: str, metadata: Any = bob, seed: int | None = 5) -> Any:
            params = pb.GenerationParams(prompt=prompt)
            if seed is not None:
                params.seed = seed
            return stub.Generate(pb.GenerateRequest(params=params), metadata=metadata, timeout=120)

        with pytest.raises(grpc.RpcError) as no_key:
            generate("a cat", metadata=())
        assert no_key.value.code() == grpc.StatusCode.UNAUTHENTICATED

        with pytest.raises(grpc.RpcError) as blocked:
            generate(BLOCKED_IN_DISGUISE)
        assert blocked.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        first, second = generate("a grey heron"), generate("a grey heron")
        assert (first.cache_hit, second.cache_hit) == (False, True)
        assert first.images[0].data == second.images[0].data


def test_classifier_refusal_never_reaches_the_pipeline(tiny_flux_dir: Path, tmp_path: Path) -> None:
    from flux_server.service.core import GenerationService

    from .tiny_classifier import write_tiny_classifier

    # Scores "unsafe" at about 0.99 whatever the text.
    flags = write_tiny_classifier(tmp_path / "flags", unsafe_bias=5.0)
    lenient = GenerationService(
        _settings(tiny_flux_dir, safety_model=str(flags), safety_threshold=0.999)
    )
    assert lenient.admission.safety.check("a photo of a cat").allowed  # the threshold is honoured

    server = RunningServer(
        _settings(tiny_flux_dir, safety_model=str(flags), safety_threshold=0.9)
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            refused = client.post("/generate", json={"prompt": "a photo of a cat"})
            assert refused.status_code == 400
            error = refused.json()["error"]
            assert error["field"] == "prompt" and "classifier" in error["message"]
            assert _metric(client, "fluxserve_safety_rejections_total", reason="classifier") == 1
            assert _metric(client, "fluxserve_images_generated_total") == 0
            assert _metric(client, "fluxserve_batch_size_count") == 0
    finally:
        server.stop()
