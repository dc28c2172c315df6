"""Typed requests and results of the SDK, independent of the transport.

Requests only check types here: the limits (sizes, steps, prompt length) belong to the
server, whose errors name the field and the limit.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from PIL import Image as PILImage
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from flux_contract.experiments import ExperimentArm


class ImageFormat(str, Enum):
    """Encoding of returned images."""

    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"

    @classmethod
    def parse(cls, value: str | ImageFormat) -> ImageFormat:
        """Accept ``"PNG"``, ``"jpg"``, ``"image/webp"`` and the like."""
        if isinstance(value, ImageFormat):
            return value
        name = value.strip().lower().removeprefix("image/").removeprefix("image_format_")
        name = {"jpg": "jpeg"}.get(name, name)
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"output_format must be png, jpeg or webp, not {value!r}") from None

    @classmethod
    def from_path(cls, path: str | Path) -> ImageFormat | None:
        """The format a file name's suffix asks for, if it names one."""
        suffix = Path(path).suffix.lstrip(".")
        try:
            return cls.parse(suffix) if suffix else None
        except ValueError:
            return None


class Priority(str, Enum):
    """Scheduling lane; ``HIGH`` needs an API key that allows it."""

    NORMAL = "normal"
    HIGH = "high"


class EditMode(str, Enum):
    """How ``edit`` changes the input image."""

    IMG2IMG = "img2img"
    INPAINT = "inpaint"
    INSTRUCT = "instruct"


def _lower(value: object) -> object:
    """Enum values are lower case; ``"HIGH"`` means ``high``."""
    return value.lower() if isinstance(value, str) else value


def _parse_format(value: object) -> object:
    return ImageFormat.parse(value) if isinstance(value, str) else value


INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1


class Adapter(BaseModel):
    """A LoRA adapter the server was started with, and its weight."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    scale: float = 1.0


AdaptersArg = Mapping[str, float] | Iterable[Adapter] | None
"""Adapters as ``{"name": scale}`` or a list of ``Adapter``."""


def adapters_from_arg(adapters: AdaptersArg) -> list[Adapter]:
    if adapters is None:
        return []
    if isinstance(adapters, Mapping):
        return [Adapter(name=name, scale=scale) for name, scale in adapters.items()]
    return [a if isinstance(a, Adapter) else Adapter.model_validate(a) for a in adapters]


class GenerationParams(BaseModel):
    """What to generate. ``None`` means: the style preset's value, then the server's default."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    negative_prompt: str | None = None
    # Only what the wire cannot carry is refused here (int32, uint64); the server
    # checks its own, tighter limits and names them.
    width: int | None = Field(None, le=INT32_MAX)
    height: int | None = Field(None, le=INT32_MAX)
    steps: int | None = Field(None, le=INT32_MAX)
    guidance_scale: float | None = None
    true_cfg_scale: float | None = None
    style_preset: str | None = None
    seed: int | None = Field(None, ge=0, le=UINT64_MAX)
    num_images: int | None = Field(None, le=INT32_MAX)
    output_format: Annotated[ImageFormat | None, BeforeValidator(_parse_format)] = None
    priority: Annotated[Priority, BeforeValidator(_lower)] = Priority.NORMAL
    adapters: list[Adapter] = Field(default_factory=list)
    user_id: str | None = None
    """Who the request is for, when no API key says so (``X-User-Id``): the subject
    that experiments assign to an arm."""
    headers: dict[str, str] = Field(default_factory=dict)
    """More request headers (gRPC metadata), e.g. the one an experiment's audience reads."""
    previews: bool | None = None
    """Live previews every few steps, on the calls that stream (``stream``, a job's events)."""


class EditParams(BaseModel):
    """An edit: the input image (and mask) as encoded bytes, plus generation parameters."""

    model_config = ConfigDict(extra="forbid")

    image: bytes
    mask: bytes | None = None
    strength: float | None = None
    mode: Annotated[EditMode | None, BeforeValidator(_lower)] = None
    params: GenerationParams


class VqaParams(BaseModel):
    """A question about an image (encoded bytes)."""

    model_config = ConfigDict(extra="forbid")

    image: bytes
    question: str
    max_tokens: int = Field(64, le=INT32_MAX)


class GeneratedImage(BaseModel):
    """One returned image: the encoded bytes exactly as the server sent them."""

    model_config = ConfigDict(frozen=True)

    data: bytes = Field(repr=False)
    format: ImageFormat
    width: int
    height: int
    seed: int

    def to_pil(self) -> PILImage.Image:
        """Decode into a PIL image; ``image.info`` carries the seed."""
        image = PILImage.open(io.BytesIO(self.data))
        image.load()
        image.info["seed"] = self.seed
        return image

    def save(self, path: str | Path) -> Path:
        """Write the bytes as received (so equal seeds give equal files)."""
        target = Path(path)
        target.write_bytes(self.data)
        return target


class Timings(BaseModel):
    """Where the time of a request went, in milliseconds."""

    queue_ms: float = 0.0
    inference_ms: float = 0.0
    total_ms: float = 0.0


class FeedbackParams(BaseModel):
    """An outcome of a request served in an experiment."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    event: str
    value: float = 1.0


class FeedbackResult(BaseModel):
    """What ``feedback`` recorded."""

    request_id: str
    experiment: str
    arm: str
    event: str
    counted: bool
    """False when this request already had this event (an event counts once)."""


class GenerationResult(BaseModel):
    """The full answer to a generation or an edit."""

    images: list[GeneratedImage]
    request_id: str = ""
    release: str = ""
    model: str = ""
    batch_size: int = 0
    """How many requests' images ran together in one pipeline call."""
    timings: Timings = Field(default_factory=Timings)
    cache_hit: bool = False
    experiment: ExperimentArm | None = None
    """The experiment arm that served the request; None outside any experiment."""

    @property
    def seeds(self) -> list[int]:
        return [image.seed for image in self.images]

    def first_image(self) -> PILImage.Image:
        """The first image as PIL, with the seed and request id in ``image.info``."""
        if not self.images:
            raise ValueError(f"request {self.request_id or '?'} returned no images")
        image = self.images[0].to_pil()
        image.info["request_id"] = self.request_id
        return image


class Progress(BaseModel):
    """A denoising step finished (``stream``)."""

    request_id: str = ""
    step: int
    total_steps: int


class Preview(BaseModel):
    """A live preview of image ``index`` after denoising step ``step`` (``previews=True``):
    a small image decoded from the latents, at most 256 px on its long side."""

    request_id: str = ""
    step: int
    total_steps: int
    index: int = 0
    data: bytes
    format: ImageFormat = ImageFormat.WEBP
    width: int = 0
    height: int = 0

    def to_pil(self) -> PILImage.Image:
        return PILImage.open(io.BytesIO(self.data))

    @classmethod
    def from_event(cls, data: Mapping[str, Any], request_id: str = "") -> Preview:
        """From the data of a job's ``preview`` event (the image in base64)."""
        return cls(
            request_id=request_id,
            step=int(data["step"]),
            total_steps=int(data["total"]),
            index=int(data.get("index", 0)),
            data=base64.b64decode(data["data"]),
            format=ImageFormat.parse(str(data.get("format", "webp"))),
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
        )


PreviewCallback = Callable[[Preview], Any]
"""``on_preview``: called with each live preview as it arrives."""

StreamEvent = Progress | Preview | GenerationResult
"""``stream`` yields progress events (and previews, with ``previews=True``), then one
``GenerationResult``."""


class VqaResult(BaseModel):
    """The answer to a question about an image."""

    answer: str
    request_id: str = ""
    model: str = ""


TransportName = Literal["auto", "grpc", "http"]
