"""Understand -> reason -> generate: ask the server what a person in a photo is holding,
then have it draw a close-up of that object.

    python examples/understand_then_generate.py input_image.jpg
    python examples/understand_then_generate.py photo.jpg --port 50051   # over gRPC
    python examples/understand_then_generate.py photo.jpg --port 18080 --transport http

The server must be started with ``--vqa-model``. Needs only the SDK (``pip install .``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flux_client import FluxModelClient
from flux_client.errors import FluxError

QUESTION = "What is the man holding in his right hand?"
CLOSE_UP = "a close-up of {object} on a wooden table, studio lighting"


def close_up_prompt(answer: str, template: str = CLOSE_UP) -> str | None:
    """The generation prompt for the object a VQA answer names; None when it names none.

    VQA models answer tersely ("a briefcase", "briefcase.", "He is holding a briefcase"),
    so the answer is used as the object after trimming punctuation and a leading
    "he/she is holding".
    """
    text = answer.strip().strip(".!").strip()
    lowered = text.lower()
    for lead in ("he is holding ", "she is holding ", "they are holding ", "holding "):
        if lowered.startswith(lead):
            text = text[len(lead) :]
            break
    if not text or text.lower() in {"nothing", "no", "none", "unknown"}:
        return None
    return template.format(object=text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path, help="photo of a person holding something")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8080, help="8080 REST, 50051 gRPC")
    parser.add_argument(
        "--transport",
        choices=("auto", "http", "grpc"),
        default="auto",
        help="auto: REST on port 8080, gRPC on any other",
    )
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--output", type=Path, default=Path("detail.png"))
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if not args.image.is_file():
        parser.error(f"no such image file: {args.image}")

    client = FluxModelClient(
        host=args.host, port=args.port, transport=args.transport, api_key=args.api_key
    )
    try:
        answer = client.vqa(
            image=str(args.image), question=args.question, max_tokens=args.max_tokens
        )
        print(f"Q: {args.question}")
        print(f"A: {answer}")
        prompt = close_up_prompt(answer)
        if prompt is None:
            print("The answer names nothing to draw; stopping here.")
            return 0
        image = client.generate(
            prompt=prompt,
            width=args.width,
            height=args.height,
            steps=args.steps,
            seed=args.seed,
            output_path=args.output,
        )
        print(f"Generated {args.output} ({image.size[0]}x{image.size[1]}): {prompt!r}")
        return 0
    except FluxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
