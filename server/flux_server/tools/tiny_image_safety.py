"""Write a ViT image-classification model with random weights, built locally: the
architecture of Falconsai/nsfw_image_detection (labels ``normal``/``nsfw``) at tiny widths.

``write_tiny_image_safety(DIR)`` saves a ``ViTForImageClassification`` with its
``ViTImageProcessor`` (32-pixel input); ``--image-safety-model DIR`` loads it through the
same Auto classes that load the real model. Its verdicts are random: tests force them with
``--image-safety-threshold`` (0 refuses every image, 1 none).
"""

from __future__ import annotations

import argparse
from pathlib import Path

LABELS = {0: "normal", 1: "nsfw"}


def write_tiny_image_safety(out: Path | str, *, seed: int = 0, image_size: int = 32) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=image_size,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=LABELS,
        label2id={label: i for i, label in LABELS.items()},
        problem_type="single_label_classification",
    )
    out = Path(out)
    ViTForImageClassification(config).save_pretrained(out)
    ViTImageProcessor(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_tiny_image_safety(args.out, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
