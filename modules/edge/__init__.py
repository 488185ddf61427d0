"""Edge packages: an SD1.5 model (LoRAs merged, U-Net optionally pruned) exported to ONNX, INT8-quantized,
with a TAESD decoder; run with ONNX Runtime. See docs/edge.md.

Modules: :mod:`build` (the five build steps, CLI), :mod:`prune`, :mod:`export`, :mod:`quantize`,
:mod:`runtime` (:class:`~modules.edge.runtime.EdgePipeline`), :mod:`manifest` (torch-free).
Importing this package does not import torch.
"""
