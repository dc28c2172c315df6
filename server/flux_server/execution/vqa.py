"""Visual question answering with a transformers vision-language model.

Two families load through the Auto classes, chosen by the checkpoint's
``model_type``:

* BLIP-style VQA (``blip``, e.g. Salesforce/blip-vqa-base):
  ``BlipForQuestionAnswering`` + its processor; the question goes in as text and the
  decoder writes the answer.
* image-text-to-text models (LLaVA, Qwen2-VL, Idefics, SmolVLM, ...):
  ``AutoModelForImageTextToText`` + ``AutoProcessor``; the question is put in a
  one-turn chat (the processor's chat template, when it has one) and only the newly
  generated tokens are returned.

Decoding is greedy, so one question about one image gets one answer. Calls are
serialized by a lock: :meth:`VqaModel.answer` blocks, so async servers run it in a
worker thread.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Final, Literal

from PIL import Image

from flux_server.execution.inputs import InputRejected

log = logging.getLogger(__name__)

#: Tokens generated when the caller does not say (the SDK's default too).
DEFAULT_MAX_TOKENS: Final[int] = 64
#: The most tokens one answer may take.
MAX_TOKENS: Final[int] = 512
#: The longest question accepted, in characters.
MAX_QUESTION_CHARS: Final[int] = 2000

VqaKind = Literal["blip", "image-text-to-text"]


def check_question(question: str, max_tokens: int) -> None:
    """Check a question and its token budget before any model runs.

    Raises:
        InputRejected: an empty or too long question, ``max_tokens`` out of range.
    """
    if not question or not question.strip():
        raise InputRejected("question", "is empty; ask a question about the image")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputRejected(
            "question", f"is {len(question)} characters; the limit is {MAX_QUESTION_CHARS}"
        )
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InputRejected("max_tokens", f"must be an integer, not {max_tokens!r}")
    if not 1 <= max_tokens <= MAX_TOKENS:
        raise InputRejected("max_tokens", f"must be between 1 and {MAX_TOKENS}, not {max_tokens}")


def _default_dtype(device: str) -> Any:
    """As the generator's --dtype auto: float32 on the CPU; bfloat16 on GPUs, float16 on
    those without it (T4, V100)."""
    import torch

    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _model_class(path_or_id: str, revision: str | None) -> tuple[VqaKind, Any]:
    """The kind of VQA model the checkpoint's config names, and its transformers class."""
    from transformers import AutoConfig, AutoModelForImageTextToText, BlipForQuestionAnswering
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(path_or_id, revision=revision)
    except (OSError, ValueError) as exc:
        raise VqaModelError(f"cannot load the VQA model {path_or_id!r}: {exc}") from exc
    if config.model_type == "blip":
        return "blip", BlipForQuestionAnswering
    if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return "image-text-to-text", AutoModelForImageTextToText
    raise VqaModelError(
        f"{path_or_id!r} is a {config.model_type!r} model; --vqa-model needs a BLIP "
        "VQA model or an image-text-to-text model"
    )


class VqaModelError(RuntimeError):
    """The VQA model could not be loaded (a start-up failure, not a request error)."""


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; others pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class VqaModel:
    """A loaded vision-language model that answers questions about images."""

    def __init__(self, model: Any, processor: Any, kind: VqaKind, name: str, device: str) -> None:
        self.model = model
        self.processor = processor
        self.kind: VqaKind = kind
        self.name = name
        self.device = device
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path_or_id: str,
        device: str = "auto",
        *,
        revision: str | None = None,
        dtype: Any = None,
    ) -> VqaModel:
        """Load a VQA model from a local directory or a hub id.

        Args:
            path_or_id: what ``from_pretrained`` accepts. Hub models read ``HF_TOKEN``.
            device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
            revision: the hub revision.
            dtype: a torch dtype; default float32 on CPU, bfloat16 on CUDA (float16
                where the GPU has no bfloat16).

        Raises:
            VqaModelError: the checkpoint is missing, unreadable or not a VQA model.
        """
        from transformers import AutoProcessor

        if path_or_id.startswith(("/", "./", "../")) and not Path(path_or_id).is_dir():
            # Otherwise transformers takes it for a hub id and says so, confusingly.
            raise VqaModelError(f"cannot load the VQA model {path_or_id!r}: no such directory")
        device = resolve_device(device)
        if dtype is None:
            dtype = _default_dtype(device)
        kind, model_cls = _model_class(path_or_id, revision)
        try:
            processor = AutoProcessor.from_pretrained(path_or_id, revision=revision)
            model = model_cls.from_pretrained(path_or_id, revision=revision, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise VqaModelError(f"cannot load the VQA model {path_or_id!r}: {exc}") from exc
        model.to(device).eval()
        log.info(
            "loaded VQA model", extra={"vqa_model": path_or_id, "kind": kind, "device": device}
        )
        return cls(model, processor, kind, name=path_or_id, device=device)

    @property
    def max_positions(self) -> int | None:
        """The most token positions the language model has (its config's
        ``max_position_embeddings``); None when the config does not say."""
        config = self.model.config
        text = getattr(config, "text_config", None) or config
        limit = getattr(text, "max_position_embeddings", None)
        return limit if isinstance(limit, int) and limit > 0 else None

    def check(self, question: str, max_tokens: int) -> None:
        """Refuse what the loaded model cannot take, before it is queued: the API's
        limits are the largest any model may get, this model's may be smaller.

        Raises:
            InputRejected: see :func:`check_question`; a question of more tokens
                than the model has positions; more answer tokens than it can write.
        """
        check_question(question, max_tokens)
        limit = self.max_positions
        if limit is None:
            return
        tokens = len(self.processor.tokenizer(question)["input_ids"])
        if tokens > limit:
            raise InputRejected(
                "question", f"is {tokens} tokens; the VQA model reads at most {limit}"
            )
        # BLIP decodes the answer on its own positions; a chat model writes it after
        # the prompt (the image's tokens are counted again in answer()).
        budget = limit if self.kind == "blip" else limit - tokens
        if max_tokens > budget:
            raise InputRejected(
                "max_tokens",
                f"is {max_tokens}; the VQA model can write at most {budget} tokens "
                "for this question",
            )

    def answer(
        self, image: Image.Image, question: str, max_tokens: int = DEFAULT_MAX_TOKENS
    ) -> str:
        """Answer ``question`` about ``image`` in at most ``max_tokens`` tokens.

        Raises:
            InputRejected: see :meth:`check`.
        """
        self.check(question, max_tokens)
        import torch

        image = image.convert("RGB")
        with self._lock, torch.inference_mode():
            if self.kind == "blip":
                inputs = self.processor(images=image, text=question, return_tensors="pt")
                out = self.model.generate(
                    **self._to_device(inputs), max_new_tokens=max_tokens, do_sample=False
                )
                text = self.processor.decode(out[0], skip_special_tokens=True)
            else:
                inputs = self.processor(
                    images=[image], text=self._chat_prompt(question), return_tensors="pt"
                )
                prompt_len = inputs["input_ids"].shape[1]
                self._check_prompt(prompt_len, max_tokens)
                out = self.model.generate(
                    **self._to_device(inputs), max_new_tokens=max_tokens, do_sample=False
                )
                text = self.processor.decode(out[0][prompt_len:], skip_special_tokens=True)
        return str(text).strip()

    def _check_prompt(self, prompt_len: int, max_tokens: int) -> None:
        """The whole prompt (chat template and image tokens included) and the answer
        must fit the model's positions."""
        limit = self.max_positions
        if limit is None or prompt_len + max_tokens <= limit:
            return
        if prompt_len >= limit:
            raise InputRejected(
                "question", f"makes a prompt of {prompt_len} tokens; the VQA model has {limit}"
            )
        raise InputRejected(
            "max_tokens",
            f"is {max_tokens}; the VQA model can write at most {limit - prompt_len} tokens "
            "for this question and image",
        )

    def _chat_prompt(self, question: str) -> str:
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
        ]
        if getattr(self.processor, "chat_template", None):
            return str(self.processor.apply_chat_template(messages, add_generation_prompt=True))
        # Without a template, the model's own image placeholder then the question.
        image_token = getattr(self.processor, "image_token", "<image>")
        return f"{image_token}\n{question}"

    def _to_device(self, inputs: Any) -> Any:
        inputs = inputs.to(self.device)
        dtype = self.model.dtype
        # Pixel values follow the model's dtype (bfloat16 on GPU); token ids stay integers.
        for key, value in inputs.items():
            if hasattr(value, "is_floating_point") and value.is_floating_point():
                inputs[key] = value.to(dtype)
        return inputs
