"""``python -m flux_trainer``: ``train`` and ``inspect``.

The ``train`` flags are ``TrainConfig``'s fields (``--learning-rate`` for
``learning_rate``; lists take several values; booleans have a ``--no-`` form), with
the model's bounds; ``--result-file`` says where the result JSON goes. Exit codes:
0 done, 2 bad flags, 3 dataset, 4 a missing package or device, 5 a checkpoint that does
not fit, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flux_trainer import __version__
from flux_trainer.config import TrainConfig, flag
from flux_trainer.errors import ConfigError, TrainerError
from flux_trainer.report import configure_logging, default_result_file, emit_result, failure

log = logging.getLogger("flux_trainer")

REQUIRED = ("base", "dataset", "output")
_UNSET = object()


def _add_field(parser: argparse.ArgumentParser, name: str, info: Any) -> None:
    annotation = info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = args[0]
    origin = typing.get_origin(annotation)
    default = "required" if info.is_required() else info.get_default(call_default_factory=True)
    help_text = f"{info.description} (default: {default})"
    kwargs: dict[str, Any] = {"dest": name, "default": _UNSET, "help": help_text}
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin is typing.Literal:
        kwargs["choices"] = typing.get_args(annotation)
    elif origin is list:
        item = typing.get_args(annotation)[0]
        kwargs.update(nargs="+", type=typing.get_args(item)[0] if typing.get_args(item) else item)
    else:
        kwargs["type"] = annotation if annotation in (int, float) else str
        kwargs["metavar"] = name.upper()
    parser.add_argument(flag(name), required=name in REQUIRED, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flux_trainer",
        description="LoRA fine-tuning of FLUX on diffusers and peft.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train a LoRA from a captioned image folder",
        description="Train a LoRA; writes OUTPUT/pytorch_lora_weights.safetensors, "
        "metrics.json, samples/ and checkpoints/, and prints the result as one JSON line.",
    )
    for name, info in TrainConfig.model_fields.items():
        _add_field(train, name, info)
    train.add_argument(
        "--result-file",
        type=Path,
        default=None,
        help="where to write the result JSON too (default: /dev/termination-log when it exists)",
    )
    inspect = commands.add_parser("inspect", help="print what an adapter file records")
    inspect.add_argument("file", type=Path, help="a .safetensors adapter (or its folder)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def config_from(args: argparse.Namespace) -> TrainConfig:
    values = {
        name: getattr(args, name)
        for name in TrainConfig.model_fields
        if getattr(args, name) is not _UNSET
    }
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = flag(str(error["loc"][0])) if error["loc"] else "flags"
            problems.append(f"{where}: {error['msg']}")
        raise ConfigError("; ".join(problems)) from None


def _train(args: argparse.Namespace) -> int:
    configure_logging()
    result_file = args.result_file or default_result_file()
    try:
        config = config_from(args)
        from flux_trainer.dataset import prepare

        local, data = prepare(config)
        from flux_trainer.run import train
        from flux_trainer.upload import upload

        outcome = train(config, local, data)
        uri = upload(config, outcome["adapter"]) if config.upload else None
    except TrainerError as exc:
        log.error(
            "training failed", extra={"event": "failed", "error": exc.kind, "detail": str(exc)}
        )
        emit_result(failure(exc.kind, str(exc), exc.exit_code), result_file)
        return exc.exit_code
    except Exception as exc:  # the result file must say something whatever happened
        log.exception("training failed", extra={"event": "failed", "error": "error"})
        emit_result(failure("error", f"{type(exc).__name__}: {exc}", 1), result_file)
        return 1
    from flux_trainer.hashing import file_sha256

    result = {
        "status": "succeeded",
        "adapter": str(outcome["adapter"]),
        "adapter_uri": uri,
        "sha256": file_sha256(outcome["adapter"]),
        "dataset_sha256": outcome["dataset_sha256"],
        "trainer_version": __version__,
        "metrics": outcome["metrics"],
    }
    log.info("training done", extra={"event": "done", **outcome["metrics"]})
    emit_result(result, result_file)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from flux_trainer.adapter import WEIGHTS, describe

    path = args.file / WEIGHTS if args.file.is_dir() else args.file
    try:
        info = describe(path)
    except TrainerError as exc:
        print(f"inspect: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"file: {info['file']}")
    print(f"sha256: {info['sha256']}")
    print(f"tensors: {info['tensors']}  parameters: {info['parameters']}")
    if not info["training"]:
        print("training: none recorded (not written by flux_trainer)")
    for key, value in info["training"].items():
        shown = value if isinstance(value, str) else json.dumps(value)
        print(f"{key}: {shown}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "inspect":
        return _inspect(args)
    return _train(args)
