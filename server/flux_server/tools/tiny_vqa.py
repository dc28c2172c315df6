"""Write a BLIP visual-question-answering model with random weights, built locally.

``write_tiny_vqa(DIR)`` saves a ``BlipForQuestionAnswering`` (the architecture of
Salesforce/blip-vqa-base, tiny widths) with its ``BlipProcessor``: a BERT WordPiece
tokenizer from a small vocabulary and a 32-pixel image processor. Nothing is
downloaded; ``VqaModel.load(DIR)`` (and ``--vqa-model DIR``) loads it through the
same Auto-class code that loads a real model. The answers are random words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

# BERT's special tokens, then BLIP's decoder-start token, then a small English vocabulary.
_SPECIALS: Final[list[str]] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
_WORDS: Final[list[str]] = [
    "a",
    "an",
    "the",
    "what",
    "is",
    "are",
    "who",
    "where",
    "how",
    "many",
    "which",
    "color",
    "man",
    "woman",
    "cat",
    "dog",
    "holding",
    "holds",
    "hand",
    "right",
    "left",
    "in",
    "on",
    "of",
    "with",
    "his",
    "her",
    "it",
    "yes",
    "no",
    "one",
    "two",
    "three",
    "briefcase",
    "umbrella",
    "phone",
    "book",
    "cup",
    "bag",
    "red",
    "blue",
    "green",
    "black",
    "white",
    "silver",
    "table",
    "street",
    "city",
    "room",
    "sky",
    "car",
]
_IMAGE_SIZE: Final[int] = 32


def build_tiny_vqa(seed: int = 0) -> tuple[Any, Any]:
    """A random ``BlipForQuestionAnswering`` and its ``BlipProcessor``."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
    )

    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789?.,'")
    tokens = _SPECIALS + _WORDS + [c for c in chars if c not in _WORDS] + [f"##{c}" for c in chars]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", model_max_length=64)
    image_processor = BlipImageProcessor(
        size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE},
    )
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)

    torch.manual_seed(seed)
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "encoder_hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "pad_token_id": vocab["[PAD]"],
            "bos_token_id": vocab["[DEC]"],
            "sep_token_id": vocab["[SEP]"],
            "eos_token_id": vocab["[SEP]"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": _IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    model = BlipForQuestionAnswering(config).eval()
    return model, processor


def write_tiny_vqa(out_dir: Path | str, seed: int = 0) -> Path:
    """Save a random BLIP VQA model and its processor under ``out_dir``; return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, processor = build_tiny_vqa(seed)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
