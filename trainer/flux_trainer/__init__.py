"""flux_trainer: LoRA fine-tuning of a FLUX pipeline on diffusers and peft.

``python -m flux_trainer train`` turns a captioned image folder into
``pytorch_lora_weights.safetensors`` (diffusers format, what ``python -m flux_server
--lora NAME=PATH`` loads); ``python -m flux_trainer inspect FILE`` prints what an adapter
records about its training. Importing this package loads no torch.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
