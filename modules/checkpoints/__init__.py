"""On-disk checkpoint knowledge, in one place: what the files look like, never how a model runs.

* :mod:`~modules.checkpoints.header`: the one safetensors header reader (one size limit).
* :mod:`~modules.checkpoints.layouts`: the original (A1111/LDM/ComfyUI) single-file key prefixes and the
  diffusers <-> original block tables (U-Net, VAE, OpenCLIP, Z-Image DiT).
* :mod:`~modules.checkpoints.convert`: diffusers state dicts -> the original layout, per component.
* :mod:`~modules.checkpoints.lora_keys`: LoRA key namings (kohya, diffusers/PEFT, cloneofsimo, LyCORIS).
* :mod:`~modules.checkpoints.hf_cache`: finding repos and snapshot folders in the Hugging Face cache.
* :mod:`~modules.checkpoints.single_file`: Visage's single-file metadata, and saving a pipeline as one file.

Importing any of these is torch-free; the functions that need torch or safetensors import them inside.
"""
