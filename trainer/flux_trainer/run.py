"""One training run, start to finish: the dataset fetched and checked (before any model
is loaded), the pipeline loaded, latents and prompts cached, the LoRA added, then the
loop with its checkpoints, and the adapter, ``metrics.json`` and the result at the end."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flux_trainer import __version__, buckets, checkpoint, samples
from flux_trainer import dataset as datasets
from flux_trainer.config import TrainConfig
from flux_trainer.encode import Cached, Prompt, cache_examples, drop_text_encoders, encode_prompts
from flux_trainer.errors import ConfigError, ResumeError
from flux_trainer.flow import training_loss, validation_loss
from flux_trainer.model import Placement, add_lora, load_pipeline, placement, save_lora
from flux_trainer.optim import make_optimizer
from flux_trainer.report import Progress, quiet_hub_libraries, write_metrics
from flux_trainer.sources import LocalDataset

log = logging.getLogger("flux_trainer")

SHEET_PROMPTS = 4


@dataclass
class History:
    """What the run has measured, carried across a resume in the checkpoint's state."""

    base_validation_loss: float | None = None
    validation: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    peak_memory_gb: float = 0.0


class Run:
    """A run's state between its phases (each method is one phase)."""

    def __init__(self, config: TrainConfig, local: LocalDataset, data: datasets.Dataset) -> None:
        self.config, self.local, self.data = config, local, data
        self.output = Path(config.output)
        self.started = time.monotonic()
        self.history = History()
        self.where: Placement = placement(config)
        self.resume_from = self._resume_point()

    def _resume_point(self) -> Path | None:
        found = checkpoint.latest(self.output)
        if found is not None and not self.config.resume:
            # Two runs' checkpoints in one folder would be pruned and resumed as one.
            raise ConfigError(
                f"--output {self.output} holds checkpoints of an earlier run ({found.name}): "
                "pass --resume to continue it, or give an empty --output"
            )
        if found is not None:
            state = checkpoint.read_state(found)
            checkpoint.check_compatible(state, self.config.fingerprint(), self.data.sha256, found)
        return found

    def load(self) -> None:
        """The pipeline, every latent and prompt cached, the LoRA and its optimizer."""
        config = self.config
        self.pipe = load_pipeline(config, self.where)
        size_of = buckets.bucket_sizes(config.resolution)
        self.train_sizes = [buckets.nearest(e.width, e.height, size_of) for e in self.data.train]
        val_sizes = [buckets.nearest(e.width, e.height, size_of) for e in self.data.validation]
        self.train = self._cache(self.data.train, self.train_sizes)
        self.validation = self._cache(self.data.validation, val_sizes)
        prompts = list(config.validation_prompts) or [
            e.caption for e in self.data.validation[:SHEET_PROMPTS]
        ]
        self.sheet_prompts: list[Prompt] = encode_prompts(
            self.pipe, prompts, self.where, config.max_sequence_length
        )
        drop_text_encoders(self.pipe)
        self.transformer = self.pipe.transformer
        if not config.qlora:  # on the device once the text encoders have left it
            self.transformer.to(self.where.device)
        self.params = add_lora(self.transformer, config)
        self.optimizer, self.optimizer_name = make_optimizer(self.params, config, self.where)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        trainable = sum(p.numel() for p in self.params)
        self.trainable = {
            "trainable_parameters": trainable,
            "trainable_share": round(
                trainable / sum(p.numel() for p in self.transformer.parameters()), 5
            ),
        }
        log.info(
            "model ready",
            extra={
                "event": "ready",
                "device": str(self.where.device),
                "dtype": str(self.where.dtype).removeprefix("torch."),
                "optimizer": self.optimizer_name,
                **self.trainable,
                "buckets": sorted({f"{w}x{h}" for w, h in self.train_sizes}),
            },
        )

    def _cache(
        self, examples: tuple[datasets.Example, ...], sizes: list[buckets.Size]
    ) -> list[Cached]:
        paths = [str(self.data.path(e)) for e in examples]
        captions = [e.caption for e in examples]
        return cache_examples(
            self.pipe, paths, captions, sizes, self.where, self.config.max_sequence_length
        )

    def start(self) -> int:
        """The first step to run: 0 after measuring the base model, or the checkpoint's."""
        if self.resume_from is not None:
            return self._resume(self.resume_from)
        base = self._validate()
        self.history.base_validation_loss = base
        self._sheet(0)
        log.info(
            "base model measured", extra={"event": "validation", "step": 0, "validation_loss": base}
        )
        return 0

    def _resume(self, folder: Path) -> int:
        state = checkpoint.restore(folder, self.transformer, self.optimizer, self.generator)
        if state.get("optimizer") != self.optimizer_name:
            raise ResumeError(
                f"--resume: {folder} used {state.get('optimizer')}, this run {self.optimizer_name}"
            )
        if state["step"] > self.config.steps:
            raise ResumeError(f"--resume: {folder} is past --steps {self.config.steps}")
        self.history = History(
            state["base_validation_loss"],
            state["validation"],
            state["seconds"],
            state["peak_memory_gb"],
        )
        log.info(
            "resumed",
            extra={"event": "resumed", "step": state["step"], "checkpoint": str(folder)},
        )
        return int(state["step"])

    def _validate(self) -> float:
        self.transformer.eval()
        try:
            return validation_loss(
                self.transformer, self.validation, self.pipe.vae.config, self.config
            )
        finally:
            self.transformer.train()

    def _sheet(self, step: int) -> Path:
        config = self.config
        self.transformer.eval()
        try:
            rows = samples.render(
                self.pipe,
                self.sheet_prompts,
                config.validation_seeds,
                config.resolution,
                config.sample_steps,
                config.sample_guidance_scale,
            )
        finally:
            self.transformer.train()
        label = "base model" if step == 0 else f"step {step}"
        return samples.write(self.output, step, samples.sheet(rows, label))

    def loop(self, first: int) -> None:
        config = self.config
        order = buckets.Batches(self.train_sizes, config.batch_size, config.seed)
        progress = Progress(first, config.steps)
        self.transformer.train()
        for step in range(first, config.steps):
            batch = [self.train[i] for i in order.at(step)]
            loss = training_loss(
                self.transformer,
                batch,
                self.scheduler,
                self.pipe.vae.config,
                config,
                self.generator,
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            done = step + 1
            progress.step(done, float(loss.detach()), config.learning_rate)
            if done % config.checkpoint_every == 0 or done == config.steps:
                self._checkpoint(done)

    def _checkpoint(self, step: int) -> None:
        loss = self._validate()
        self.history.validation.append({"step": step, "loss": loss})
        sheet = self._sheet(step)
        self._account()
        state = {
            "fingerprint": self.config.fingerprint(),
            "dataset_sha256": self.data.sha256,
            "optimizer": self.optimizer_name,
            "trainer_version": __version__,
            "base_validation_loss": self.history.base_validation_loss,
            "validation": self.history.validation,
            "seconds": self.history.seconds,
            "peak_memory_gb": self.history.peak_memory_gb,
        }
        folder = checkpoint.save(
            self.output,
            step,
            self.transformer,
            self.optimizer,
            self.generator,
            state,
            self.config.keep_checkpoints,
        )
        log.info(
            "checkpoint",
            extra={
                "event": "checkpoint",
                "step": step,
                "validation_loss": loss,
                "path": str(folder),
                "contact_sheet": str(sheet),
            },
        )

    def _account(self) -> None:
        """Add this process's time so far to the run's, and take the memory high-water mark."""
        now = time.monotonic()
        self.history.seconds += now - self.started
        self.started = now
        self.history.peak_memory_gb = max(
            self.history.peak_memory_gb, peak_memory_gb(self.where.device)
        )

    def finish(self) -> dict[str, Any]:
        """Write the adapter and metrics.json; returns the metrics and the adapter's file."""
        history, config = self.history, self.config
        final = history.validation[-1]["loss"]
        self._account()
        metrics = {
            "base_validation_loss": history.base_validation_loss,
            "final_validation_loss": final,
            "steps": config.steps,
            "seconds": round(history.seconds, 3),
            "peak_memory_gb": history.peak_memory_gb,
        }
        record = {
            "base_model": config.base,
            "base_revision": config.revision or "unpinned",
            "rank": config.rank,
            "lora_alpha": config.alpha,
            "target_modules": list(config.target_modules),
            "dataset_sha256": self.data.sha256,
            "dataset_source": config.dataset,
            "dataset_revision": self.local.revision or "",
            "trainer_version": __version__,
            "resolution": config.resolution,
            "steps": config.steps,
            "seed": config.seed,
            "learning_rate": config.learning_rate,
            "qlora": config.qlora,
            "base_validation_loss": history.base_validation_loss,
            "final_validation_loss": final,
        }
        path = save_lora(self.transformer, self.output, record)
        write_metrics(
            self.output,
            {
                **metrics,
                "validation": history.validation,
                "optimizer": self.optimizer_name,
                **self.trainable,
            },
        )
        return {"metrics": metrics, "adapter": path}


def peak_memory_gb(device: Any) -> float:
    """The device's allocation high-water mark (CUDA), or the process's (CPU: max RSS)."""
    if getattr(device, "type", device) == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def train(config: TrainConfig, local: LocalDataset, data: datasets.Dataset) -> dict[str, Any]:
    """Run ``config`` on its checked dataset (``dataset.prepare``) to the end; returns
    the metrics and the adapter's path."""
    quiet_hub_libraries()
    run = Run(config, local, data)
    run.load()
    run.loop(run.start())
    return {**run.finish(), "dataset_sha256": data.sha256}
