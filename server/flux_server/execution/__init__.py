"""The torch layer: the loaded pipelines (text to image, editing, VQA), the speed
options and LoRA adapters, and the single thread that runs them."""
