"""FLUX.1-dev's shapes and the arithmetic floor: the configurations ``make bench-gpu``
builds a random-weight model from, the FLOPs of one transformer forward counted from its
layer shapes, and the dense bf16 peaks of known GPUs."""

from __future__ import annotations

from typing import Any

import torch

FLUX_DEV_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}
FLUX_DEV_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
FLUX_DEV_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}
TEXT_TOKENS = 512

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets.
# Matched against torch.cuda.get_device_name(), longest name first.
DENSE_BF16_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,  # SXM
    "H200": 989.0,
    "GH200": 989.0,
    "H800": 989.0,
    "B200": 2250.0,
    "B100": 1750.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 6000 Ada": 364.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}


def peak_tflops(device_name: str) -> float | None:
    for name in sorted(DENSE_BF16_TFLOPS, key=len, reverse=True):
        if name in device_name:
            return DENSE_BF16_TFLOPS[name]
    return None


def transformer_flops(transformer: Any, width: int, height: int) -> float:
    """FLOPs of one transformer forward for one image, from the layer shapes: each
    linear layer 2 x in x out x the tokens it sees; each block's attention 4 x seq^2 x
    inner dim (QK^T and attention x V)."""
    patch = transformer.config.patch_size
    img = (width // 16) * (height // 16) // (patch * patch)
    txt = TEXT_TOKENS
    seq = img + txt
    total = 0.0
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if "norm" in name or "time_text_embed" in name:
            tokens = 1  # modulation from the timestep and pooled text: one vector
        elif name.startswith("transformer_blocks."):
            text_side = any(k in name for k in ("add_q", "add_k", "add_v", "to_add_out"))
            tokens = txt if text_side or "ff_context" in name else img
        elif name.startswith("single_transformer_blocks."):
            tokens = seq
        elif name.startswith("context_embedder"):
            tokens = txt
        else:  # x_embedder, proj_out
            tokens = img
        total += 2.0 * module.in_features * module.out_features * tokens
    inner = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    blocks = len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)
    total += blocks * 4.0 * seq * seq * inner
    return total
