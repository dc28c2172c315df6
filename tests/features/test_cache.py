"""The result cache: key recipe, memory LRU in bytes, and Redis over a real socket."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from flux_server.admission.cache import MemoryCache, RedisCache, ResultCache, build_cache, cache_key

from .redis_server import RedisServer, free_port

BASE = {
    "prompt": "a lighthouse at dusk, watercolour",
    "negative_prompt": None,
    "width": 1024,
    "height": 1024,
    "steps": 28,
    "guidance_scale": 3.5,
    "true_cfg_scale": 1.0,
    "seed": 42,
    "num_images": 1,
    "output_format": "png",
    "adapters": [],
    "style_preset": "watercolour",
}
IDENTITY = {"model": "black-forest-labs/FLUX.1-dev", "revision": "abc123", "release": "v1.2.0"}


def key(**changes: object) -> str | None:
    return cache_key({**BASE, **changes}, **IDENTITY)  # type: ignore[arg-type]


# --- the key ------------------------------------------------------------------------------


def test_key_is_stable_and_ignores_what_does_not_change_pixels() -> None:
    assert key() == key()
    assert key() is not None and len(key() or "") == 64
    assert key(style_preset=None) == key()  # the preset is already expanded
    assert key(priority="high") == key()
    assert key(guidance_scale=3.5) == key(guidance_scale=3.50)
    assert key(steps=28.0) == key(steps=28)
    assert key(output_format="PNG") == key()
    assert key(prompt="cafe\u0301") == key(prompt="caf\u00e9")  # NFC
    assert key(adapters=[("a", 1.0), ("b", 0.5)]) == key(adapters={"b": 0.5, "a": 1})


@pytest.mark.parametrize(
    "changes",
    [
        {"prompt": "a lighthouse at dawn, watercolour"},
        {"negative_prompt": "blurry"},
        {"seed": 43},
        {"width": 512},
        {"steps": 27},
        {"guidance_scale": 4.0},
        {"num_images": 2},
        {"output_format": "webp"},
        {"adapters": [("ink", 1.0)]},
    ],
)
def test_key_changes_with_what_changes_the_result(changes: dict[str, object]) -> None:
    assert key(**changes) != key()


@pytest.mark.parametrize(
    "identity",
    [{"model": "other/model"}, {"revision": "def456"}, {"release": "v1.2.1"}],
)
def test_key_changes_with_model_revision_and_release(identity: dict[str, str]) -> None:
    assert cache_key(BASE, **{**IDENTITY, **identity}) != key()


def test_unseeded_requests_are_not_cached() -> None:
    assert key(seed=None) is None
    # A seed the server drew itself does not make the request repeatable.
    assert cache_key(BASE, seeded=False, **IDENTITY) is None


def test_new_adapter_weights_change_the_key() -> None:
    ink = {**BASE, "adapters": {"ink": 1.0}}
    v1 = cache_key(ink, adapter_versions={"ink": "aaaa", "neon": "cccc"}, **IDENTITY)
    v2 = cache_key(ink, adapter_versions={"ink": "bbbb", "neon": "cccc"}, **IDENTITY)
    assert v1 != v2
    # Only the adapters in use count: another adapter's new weights change nothing.
    assert v1 == cache_key(ink, adapter_versions={"ink": "aaaa", "neon": "dddd"}, **IDENTITY)
    assert key() == cache_key(BASE, adapter_versions={"ink": "aaaa"}, **IDENTITY)


def test_adapters_argument_overrides_the_field() -> None:
    with_arg = cache_key(BASE, adapters={"ink": 0.8}, **IDENTITY)
    assert with_arg == key(adapters=[{"name": "ink", "scale": 0.8}])


# --- memory -------------------------------------------------------------------------------


async def test_memory_cache_is_an_lru_bounded_in_bytes() -> None:
    cache = MemoryCache(max_bytes=3 * (1000 + 64 + 1))
    for name in "abc":
        await cache.set(name, name.encode() * 1000)
    assert cache.size_bytes <= cache.max_bytes and len(cache) == 3
    assert await cache.get("a") == b"a" * 1000  # "a" is now the most recent
    await cache.set("d", b"d" * 1000)  # evicts the least recent: "b"
    assert await cache.get("b") is None
    assert await cache.get("a") is not None and await cache.get("d") is not None
    assert cache.size_bytes <= cache.max_bytes


async def test_memory_cache_skips_values_larger_than_the_budget() -> None:
    cache = MemoryCache(max_bytes=100)
    await cache.set("big", b"x" * 1000)
    assert await cache.get("big") is None and cache.size_bytes == 0


async def test_memory_cache_replaces_and_expires() -> None:
    cache = MemoryCache(max_bytes=10_000, ttl=0.05)
    await cache.set("k", b"one")
    await cache.set("k", b"two")
    assert await cache.get("k") == b"two" and len(cache) == 1
    deadline = time.monotonic() + 5
    while await cache.get("k") is not None:
        assert time.monotonic() < deadline, "entry never expired"
        await asyncio.sleep(0.01)
    assert cache.size_bytes == 0


def test_memory_cache_refuses_zero_size() -> None:
    with pytest.raises(ValueError, match="positive"):
        MemoryCache(0)


@pytest.mark.parametrize(
    ("url", "message"),
    [("redis://:secret@host:port/0", "Port could not be cast"), ("http://x", "scheme")],
)
def test_bad_redis_url_is_a_clear_error_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        RedisCache(url, ttl=60)
    assert str(info.value).startswith("--redis-url: ") and "secret" not in str(info.value)


def test_build_cache_follows_settings() -> None:
    assert build_cache(redis_url=None, cache_bytes=0, ttl=60) is None
    assert isinstance(build_cache(redis_url=None, cache_bytes=1 << 20, ttl=60), MemoryCache)
    redis = build_cache(redis_url="redis://127.0.0.1:1/0", cache_bytes=0, ttl=60)
    assert isinstance(redis, RedisCache) and isinstance(redis, ResultCache)


# --- redis --------------------------------------------------------------------------------


async def _eventually(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_redis_round_trip_with_ttl(redis_server: RedisServer) -> None:
    import redis.asyncio as redis_asyncio

    cache = RedisCache(redis_server.url, ttl=30)
    try:
        k = key()
        assert k is not None
        assert await cache.get(k) is None
        await cache.set(k, b"\x89PNG...")
        assert await cache.get(k) == b"\x89PNG..."
        raw = redis_asyncio.Redis.from_url(redis_server.url)
        ttl_ms = await raw.pttl(f"fluxserve:result:{k}")
        await raw.aclose()
        assert 0 < ttl_ms <= 30_000
    finally:
        await cache.close()


async def test_redis_killed_mid_run_is_a_miss_then_comes_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[BaseException] = []
    cache = RedisCache(redis_server.url, ttl=60, retry_interval=0.05, on_error=failures.append)
    try:
        await cache.set("k", b"v")
        assert await cache.get("k") == b"v"

        redis_server.kill()
        with caplog.at_level(logging.WARNING, logger="flux_server.admission.cache"):
            for _ in range(5):
                assert await cache.get("k") is None  # a miss, never an exception
                await cache.set("k", b"w")
                await asyncio.sleep(0.06)  # past the retry interval: really try again
        assert len(failures) >= 2 and cache.errors == len(failures)
        assert not cache.available
        warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(warnings) == 1  # warned once per outage

        redis_server.start()  # same port; the data is gone (no persistence)

        async def stored_again() -> bool:
            await cache.set("k", b"back")
            return await cache.get("k") == b"back"

        await _eventually(stored_again)
        assert cache.available
    finally:
        await cache.close()


async def test_redis_never_reachable_is_only_misses() -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", ttl=60, retry_interval=0)
    try:
        for _ in range(3):
            await cache.set("k", b"v")
            assert await cache.get("k") is None
        assert cache.errors == 6
    finally:
        await cache.close()


def test_key_of_the_servers_resolved_job() -> None:
    from flux_server.requests.params import GenerateParams, resolve
    from flux_server.settings import ServerSettings

    settings = ServerSettings(model="tiny")
    seeded = resolve(GenerateParams(prompt="a red fox", seed=7), {}, settings)
    again = resolve(GenerateParams(prompt="a red fox", seed=7, steps=seeded.steps), {}, settings)
    other = resolve(GenerateParams(prompt="a red fox", seed=8), {}, settings)
    k = cache_key(seeded, **IDENTITY, seeded=True)
    assert k is not None and k == cache_key(again, **IDENTITY, seeded=True)
    assert k != cache_key(other, **IDENTITY, seeded=True)
    drawn = resolve(GenerateParams(prompt="a red fox"), {}, settings)
    assert cache_key(drawn, **IDENTITY, seeded=False) is None
