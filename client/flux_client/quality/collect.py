"""Run a golden set against two endpoints through the SDK: every prompt at every seed on
the stable release and the candidate, and each VQA question asked of the candidate's own
``/vqa`` about its image. No scoring here (that needs torch): images and failures only.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from PIL import Image

from flux_client.aio import AsyncFluxModelClient
from flux_client.errors import FluxError
from flux_client.quality.golden import GoldenItem, GoldenSet

DEFAULT_PORTS = {"http": 80, "https": 443, "grpc": 50051, "grpcs": 443}


@dataclass(frozen=True)
class Endpoint:
    """A release's address: ``http(s)://HOST[:PORT]`` (REST) or ``grpc(s)://HOST[:PORT]``."""

    url: str
    host: str
    port: int
    transport: str
    secure: bool

    def client(self, api_key: str | None, timeout: float) -> AsyncFluxModelClient:
        return AsyncFluxModelClient(
            self.host,
            self.port,
            self.transport,  # type: ignore[arg-type]
            api_key,
            timeout,
            secure=self.secure,
        )


def parse_endpoint(flag: str, url: str) -> Endpoint:
    """``url`` as an :class:`Endpoint`; ValueError naming ``flag`` when it is not one."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(
            f"{flag} {url!r}: write http(s)://HOST[:PORT] (REST) or grpc(s)://HOST[:PORT]"
        )
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"{flag} {url!r}: the server's address only, without a path")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(f"{flag} {url!r}: the port must be a number 1..65535") from None
    transport = "grpc" if scheme.startswith("grpc") else "http"
    return Endpoint(url, parts.hostname, port, transport, scheme.endswith("s"))


@dataclass
class Drawn:
    """What one release answered for one item: an image, or why not."""

    image: Image.Image | None = None
    error: str | None = None


@dataclass
class ItemRun:
    """One golden item on both releases, and the candidate's VQA answer."""

    item: GoldenItem
    stable: Drawn = field(default_factory=Drawn)
    candidate: Drawn = field(default_factory=Drawn)
    answer: str | None = None
    vqa_error: str | None = None

    @property
    def vqa_passed(self) -> bool | None:
        """None without a question; False when it could not be asked or answered wrongly."""
        expect = self.item.prompt.expect
        if expect is None:
            return None
        return self.answer is not None and answer_matches(self.answer, expect)


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def answer_matches(answer: str, expect: list[str]) -> bool:
    """Whether one expected answer appears in ``answer`` as whole words, ignoring case
    and punctuation (``yes`` matches "Yes, there is", not "yesterday")."""
    words = _words(answer)
    for expected in expect:
        want = _words(expected)
        if want and any(words[i : i + len(want)] == want for i in range(len(words))):
            return True
    return False


async def _draw(client: AsyncFluxModelClient, golden: GoldenSet, item: GoldenItem) -> Drawn:
    try:
        result = await client.generate_images(item.prompt.prompt, **golden.options(item))
    except FluxError as exc:
        return Drawn(error=f"{type(exc).__name__}: {exc}")
    return Drawn(image=result.images[0].to_pil())


async def _run_item(
    golden: GoldenSet,
    item: GoldenItem,
    clients: tuple[AsyncFluxModelClient, AsyncFluxModelClient],
    limit: asyncio.Semaphore,
) -> ItemRun:
    stable, candidate = clients
    async with limit:
        drawn = await asyncio.gather(_draw(stable, golden, item), _draw(candidate, golden, item))
        run = ItemRun(item, drawn[0], drawn[1])
        question = item.prompt.question
        if question is not None and run.candidate.image is not None:
            try:
                run.answer = await candidate.vqa(run.candidate.image, question)
            except FluxError as exc:
                run.vqa_error = f"{type(exc).__name__}: {exc}"
    return run


async def collect(
    golden: GoldenSet,
    stable: Endpoint,
    candidate: Endpoint,
    *,
    api_key: str | None = None,
    timeout: float = 300.0,
    concurrency: int = 2,
) -> list[ItemRun]:
    """Every item of ``golden`` on both releases, ``concurrency`` items at a time (each
    item asks both at once). A call that fails is recorded, never raised."""
    limit = asyncio.Semaphore(concurrency)
    async with (
        stable.client(api_key, timeout) as stable_client,
        candidate.client(api_key, timeout) as candidate_client,
    ):
        clients = (stable_client, candidate_client)
        return list(
            await asyncio.gather(
                *(_run_item(golden, item, clients, limit) for item in golden.items())
            )
        )
