"""All of the server's settings: one pydantic object, built in ``main()`` from the
command line and ``FLUXSERVE_*`` environment variables (a flag wins over its variable).

Every field is a flag: ``max_batch_size`` is ``--max-batch-size`` and
``FLUXSERVE_MAX_BATCH_SIZE`` (:mod:`flux_contract.flags`, the operator's convention too).
The model and speed flags, with what they mean on a device, are
:mod:`flux_server.settings.engine`'s. Nothing here is read at import time.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from flux_contract.flags import (
    FlagError,
    add_flag,
    flag_name,
    flags,
    help_text,
    settings_of,
)
from flux_server.execution.speedups import SpeedOptions
from flux_server.settings.engine import EngineSettings, check_speed_flags, speed_options
from flux_server.settings.hosts import AllowList
from flux_server.settings.webhook_secret import check_webhook_secret

ENV_PREFIX = "FLUXSERVE_"

__all__ = [
    "ENV_PREFIX",
    "ServerSettings",
    "SettingsError",
    "build_parser",
    "check_webhook_secret",
    "load_settings",
]


class ServerSettings(EngineSettings):
    """The inference server's configuration: the engine's flags (model, speed), then
    these."""

    # --- listeners -----------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Address the listeners bind.")
    http_port: int = Field(8080, ge=0, le=65535, description="REST port (0: any free port).")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0: any free port).")
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="A separate Prometheus port; 0 = none (/metrics is on the REST port).",
    )

    # --- scheduling ----------------------------------------------------------------------
    max_batch_size: int = Field(
        4, ge=1, le=64, description="Most images one pipeline call generates."
    )
    max_delay_ms: float = Field(
        50, ge=0, le=10_000, description="Longest a request waits for others to batch with."
    )
    batch_wait: Literal["when-busy", "always"] = Field(
        "when-busy",
        description="when-busy: a request that finds the engine idle runs at once (or waits, "
        "up to --max-delay-ms, for requests already being checked), and those arriving "
        "meanwhile batch; always: wait up to --max-delay-ms for company.",
    )
    max_queue: int = Field(64, ge=1, description="Requests that may wait; beyond, 429.")
    request_timeout: float = Field(
        600, gt=0, description="Deadline in seconds of a request that sets none."
    )
    keep_alive_timeout: float = Field(
        5,
        gt=0,
        le=3600,
        description="Seconds an idle HTTP keep-alive connection is held before it is closed.",
    )
    drain_timeout: float = Field(
        30, ge=0, description="Seconds to finish accepted work after SIGTERM."
    )
    header_timeout: float = Field(
        10,
        gt=0,
        le=3600,
        description="Seconds a new HTTP connection has to send a whole request head; then "
        "408 and closed (slowloris, idle sockets).",
    )
    max_connections: int = Field(
        1024,
        ge=1,
        description="Open connections per listener (HTTP, gRPC); at the cap the oldest "
        "connection still waiting for its request head makes room, else 503. Lowered to "
        "fit the file descriptor limit.",
    )
    grpc_max_connection_idle: float = Field(
        300, gt=0, description="Seconds a gRPC connection without calls is kept (then GOAWAY)."
    )
    grpc_max_connection_age: float = Field(
        3600,
        gt=0,
        description="Seconds a gRPC connection lives before GOAWAY (spreads clients over "
        "new replicas); calls in flight get --grpc-max-connection-age-grace.",
    )
    grpc_max_connection_age_grace: float = Field(
        600, ge=0, description="Seconds calls in flight may finish after a connection's GOAWAY."
    )

    # --- request limits and defaults ------------------------------------------------------
    max_side: int = Field(2048, ge=64, description="Largest width or height, in pixels.")
    max_steps: int = Field(100, ge=1, description="Most denoising steps per request.")
    max_images: int = Field(4, ge=1, description="Most images per request.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest request: an HTTP body or a gRPC message, in bytes.",
    )
    max_image_pixels: int = Field(
        4096 * 4096, ge=1, description="Largest uploaded image (edit, VQA), in pixels."
    )
    default_width: int = Field(1024, ge=64, multiple_of=16, description="Width when unset.")
    default_height: int = Field(1024, ge=64, multiple_of=16, description="Height when unset.")
    default_steps: int = Field(28, ge=1, description="Denoising steps when unset.")
    default_guidance_scale: float = Field(3.5, ge=0, description="Guidance when unset.")
    default_true_cfg_scale: float = Field(
        4.0,
        ge=1,
        description="True CFG scale used when a request has a negative prompt but no scale.",
    )

    # --- identity ------------------------------------------------------------------------
    release: str = Field("dev", description="Release tag, recorded in responses, logs, metrics.")
    presets_dir: Path | None = Field(None, description="Directory of <name>.json style presets.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")
    log_format: Literal["json", "plain"] = Field(
        "json",
        description="json: one Elastic Common Schema document a line (Filebeat, "
        "Elasticsearch; see deploy/elk); plain: text for a terminal.",
    )

    # --- production features -------------------------------------------------------------
    lora: tuple[str, ...] = Field(
        (),
        description="LoRA adapters, NAME=PATH[:SCALE], repeatable; PATH may be an s3:// URI.",
    )
    lora_sha256: tuple[str, ...] = Field(
        (),
        description="NAME=SHA256, repeatable: the adapter file's digest; another is refused.",
    )
    blocklist: Path | None = Field(
        None, description="Prompt blocklist file (word or re:PATTERN a line); extends the default."
    )
    safety_model: str | None = Field(
        None,
        description="Prompt safety classifier (transformers text classification): path or hub id.",
    )
    safety_threshold: float = Field(
        0.5, gt=0, le=1, description="Score of an unsafe label at which the classifier refuses."
    )
    image_safety_model: str | None = Field(
        None,
        description="Image safety classifier (transformers image classification, e.g. "
        "Falconsai/nsfw_image_detection, Apache-2.0): path or hub id. Runs on every generated "
        "or edited image, once a batch; a flagged image is refused (image_classifier).",
    )
    image_safety_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Probability of an unsafe label above which an image is refused: 0 "
        "refuses every image, 1 none; 0.5, the default, the unsafe label winning.",
    )
    audit_log: str | None = Field(None, description="Audit log file, or - for stdout.")
    audit_hash_prompts: bool = Field(False, description="Store prompt hashes, not prompts.")
    audit_failed_auth_interval: float = Field(
        60,
        gt=0,
        le=3600,
        description="Failed authentications are audited as one line per client address per "
        "this many seconds, with their count.",
    )
    audit_min_free_bytes: int = Field(
        1024**3,
        ge=0,
        description="Free bytes on the audit log's volume under which /readyz warns (the "
        "audit is fail-closed: a full volume stops serving).",
    )
    failed_auth_burst: int = Field(
        10,
        ge=0,
        description="Failed authentications a client address may make before 429 with "
        "Retry-After; 0 = no throttle.",
    )
    failed_auth_rate: float = Field(
        0.2,
        gt=0,
        description="Failed authentications a second an address regains (token bucket).",
    )
    api_keys: Path | None = Field(None, description="API key file; when set, keys are required.")
    priority_without_permission: Literal["downgrade", "refuse"] = Field(
        "downgrade",
        description="A high-priority request from a key without the priority permission: "
        "downgrade serves it in the normal lane (logged and audited); refuse answers 403 / "
        "PERMISSION_DENIED naming priority, for callers that must know.",
    )
    redis_url: str | None = Field(
        None,
        description="Result cache in Redis instead of memory; served-request records of "
        "experiments there too, so feedback reaching another replica counts.",
    )
    cache_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="In-memory result cache size; 0 = off."
    )
    cache_ttl: float = Field(3600, gt=0, description="Result cache entry lifetime, seconds.")
    enable_editing: bool = Field(False, description="Serve /edit (img2img, inpainting).")
    kontext_model: str | None = Field(None, description="FLUX.1 Kontext for instruction edits.")
    vqa_model: str | None = Field(None, description="Model answering /vqa questions.")

    # --- one queue for the fleet (flux_server.queue) -------------------------------------
    queue: str | None = Field(
        None,
        pattern=r"^rediss?://",
        description="redis:// or rediss:// URL of the fleet queue; unset: one process, no queue.",
    )
    queue_password: str | None = Field(
        None, repr=False, description="Queue password (from a Secret) unless the URL has one."
    )
    role: Literal["all", "front", "worker"] = Field(
        "all",
        description="With --queue: front admits and queues (no model), worker loads the "
        "model and pulls, all does both.",
    )
    track: str = Field(
        "stable",
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="Release track: a front queues on it, a worker reads only it.",
    )
    visibility_timeout: float = Field(
        30, gt=0, le=3600, description="Seconds before a silent worker's entries go to another."
    )
    priority_at_step: bool = Field(
        True,
        description="Serve a priority generation at the running call's next denoising step, "
        "the call paused (its latents kept); off: it waits for the running batch.",
    )
    canary_weight: int | None = Field(
        None,
        ge=0,
        le=100,
        description="With --queue, on a front: percent of the callers (by API key, else "
        "by request) whose work goes on the canary track, read by --track canary workers.",
    )
    queue_max_upload_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="With --queue: most bytes of an edit's image and mask (or a question's "
        "image) one queue entry carries; beyond, 413.",
    )

    # --- live previews (flux_server.execution.previews) ----------------------------------
    preview_every: int = Field(
        4,
        ge=1,
        le=1000,
        description="Steps between two live previews of a request that asks for them "
        "(previews: true).",
    )
    preview_decoder: Literal["linear", "taef1"] = Field(
        "linear",
        description="How previews are decoded from the latents: linear (one latent->RGB "
        "matrix, about free) or taef1 (the tiny autoencoder at --preview-taef1).",
    )
    preview_taef1: str | None = Field(
        None, description="Directory of TAEF1 (diffusers AutoencoderTiny), for taef1 previews."
    )

    # --- async jobs and webhooks ---------------------------------------------------------
    job_ttl: float = Field(
        3600, gt=0, description="Seconds a finished async job and its images are kept."
    )
    job_max_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        description="Most bytes of async job results kept in memory; oldest finished go first.",
    )
    job_heartbeat: float = Field(
        5,
        gt=0,
        le=300,
        description="With --redis-url: seconds between this replica's heartbeats; a replica "
        "that misses 3 is lost, and another marks its unfinished jobs failed (replica_lost).",
    )
    webhook_secret: str | None = Field(
        None,
        repr=False,
        description="Standard Webhooks signing secret, whsec_<base64 of 24-64 random bytes>.",
    )
    webhook_allow_hosts: tuple[str, ...] = Field(
        (),
        description="Webhook hosts or CIDRs allowed despite being private, loopback, etc.",
    )

    @field_validator("webhook_secret")
    @classmethod
    def _secret_is_whsec(cls, value: str | None) -> str | None:
        if value is not None:
            check_webhook_secret(value)
        return value

    @field_validator("webhook_allow_hosts")
    @classmethod
    def _allow_list_parses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        AllowList.parse(value)
        return value

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> ServerSettings:
        for name, limit_name in (
            ("default_width", "max_side"),
            ("default_height", "max_side"),
            ("default_steps", "max_steps"),
        ):
            value, limit = getattr(self, name), getattr(self, limit_name)
            if value > limit:
                raise ValueError(
                    f"{flag_name(name)} {value} is over {flag_name(limit_name)} {limit}"
                )
        return self

    @model_validator(mode="after")
    def _preview_decoder_has_weights(self) -> ServerSettings:
        if self.preview_decoder == "taef1" and not self.preview_taef1:
            raise ValueError("--preview-decoder taef1 needs --preview-taef1 PATH (its weights)")
        return self

    @model_validator(mode="after")
    def _speed_options_fit_the_device(self) -> ServerSettings:
        check_speed_flags(self, self.max_side)
        return self

    @property
    def max_delay_s(self) -> float:
        return self.max_delay_ms / 1000.0

    def speed_options(self, device: str) -> SpeedOptions:
        """What the engine applies on ``device`` (``cuda`` or ``cpu``, already chosen):
        ``--compile auto`` compiles on a GPU only, and compiling warms up every batch size."""
        return speed_options(
            self, device, (self.default_width, self.default_height), self.max_batch_size
        )


class SettingsError(ValueError):
    """A flag or variable with a value the server cannot start with."""


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from the fields of :class:`ServerSettings`."""
    parser = argparse.ArgumentParser(
        prog="python -m flux_server",
        usage="python -m flux_server --model MODEL [flags]\n       python -m flux_server keys "
        "{add,list,remove} ...",
        description="Serve a FLUX pipeline over REST and gRPC. Every flag is also an\n"
        f"environment variable {ENV_PREFIX}<FLAG_IN_UPPER_SNAKE>.",
        epilog="commands:\n  keys {add,list,remove}  manage the API keys file (--api-keys); "
        "see python -m flux_server keys --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    for flag in flags(ServerSettings, ENV_PREFIX):
        default = None if flag.field.is_required() else repr(flag.field.default)
        add_flag(parser, flag, help_text(flag, default))
    return parser


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServerSettings:
    """Settings from ``argv`` over ``environ`` over the defaults.

    Raises :class:`SettingsError` naming the flag and the limit for a bad value.
    """
    args = vars(build_parser().parse_args(list(argv or [])))
    try:
        return settings_of(ServerSettings, ENV_PREFIX, args, environ or {})
    except FlagError as exc:
        raise SettingsError(str(exc)) from None
