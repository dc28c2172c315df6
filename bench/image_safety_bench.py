"""The image safety check's cost (``--image-safety-model``), on this machine's CPU or
GPU (``make bench``): seconds per image of the classifier, next to seconds per image of
the bench-size random FLUX (``python -m flux_server.tiny_model --size bench``) it screens.

Two classifiers, both random weights built locally (no hub): ``vit-base`` has the
architecture of the recommended Falconsai/nsfw_image_detection (ViT-B/16, 224 px, 86M
parameters), so its cost is that model's; ``tiny`` is the tests' stand-in. The
classifier runs once a batch; the per-image cost is given at batch 1 and at --batch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SIZE = 256


def _vit_base(out: Path) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    labels = {0: "normal", 1: "nsfw"}
    config = ViTConfig(id2label=labels, label2id={v: k for k, v in labels.items()})
    ViTForImageClassification(config).save_pretrained(out)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(out)
    return out


def _per_image(classify, images, reps: int) -> float:  # type: ignore[no-untyped-def]
    classify(images)  # warm
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        classify(images)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / len(images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from flux_server.execution.engine import Engine, choose_device
    from flux_server.execution.image_safety import ImageSafetyClassifier
    from flux_server.execution.inputs import TextToImage
    from flux_server.tools.tiny_image_safety import write_tiny_image_safety
    from flux_server.tools.tiny_model import write_tiny_flux

    device = choose_device(args.device)
    with tempfile.TemporaryDirectory(prefix="fluxserve-image-safety-") as tmp:
        root = Path(tmp)
        engine = Engine.load(str(write_tiny_flux(root / "flux", size="bench")), device=device)
        job = TextToImage("a city at dusk", SIZE, SIZE, args.steps, 3.5, seed=0)
        engine.generate([job])  # warm
        times = []
        for _ in range(args.reps):
            started = time.perf_counter()
            (pictures,) = engine.generate([job])
            times.append(time.perf_counter() - started)
        flux_s = statistics.median(times)
        images = [pictures[0].image] * args.batch
        print(
            f"image safety check, {SIZE}x{SIZE} images, {device} ({os.cpu_count()} cores), "
            f"load average {os.getloadavg()[0]:.2f}; random FLUX (bench size), "
            f"{args.steps} steps: {flux_s:.3f} s/image"
        )
        print(f"    {'classifier':<12}{'batch 1 s/image':>17}{f'batch {args.batch} s/image':>17}"
              f"{'vs FLUX':>9}")  # fmt: skip
        for name, build in (("vit-base", _vit_base), ("tiny", write_tiny_image_safety)):
            classifier = ImageSafetyClassifier(build(root / name), 0.5, device)
            one = _per_image(classifier.flag, images[:1], args.reps)
            batched = _per_image(classifier.flag, images, args.reps)
            print(f"    {name:<12}{one:>17.4f}{batched:>17.4f}{batched / flux_s:>8.1%}")
    print(f"    (median of {args.reps}; load average now {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
