"""A tiny random text classifier, built here: the stand-in for the production safety
classifier (no hub at test time)."""

from __future__ import annotations

from pathlib import Path


def write_tiny_classifier(directory: Path, unsafe_bias: float) -> Path:
    """A 2-label BERT with random weights whose output is fixed by its classifier bias."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "photo", "of"]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n", "utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=2,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, unsafe_bias]))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
