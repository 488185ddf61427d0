"""Backends: how a loaded model runs. One is chosen when a model loads (:func:`backend_class`) and kept on
the loaded model; the engine talks to it through the :class:`~modules.backends.base.Backend` protocol only.

- :mod:`base`      the protocol, :class:`Capability` and :class:`BackendKind` (torch-free)
- :mod:`select`    which backend serves a registry entry, and what it can do, before loading (torch-free)
- :mod:`diffusers` diffusers pipelines (SD1.5, SDXL, Z-Image) on the torch device
- :mod:`edge`      edge packages (ONNX Runtime), :mod:`modules.edge.runtime`
- :mod:`taesd`     the TAESD decoders the diffusers backend previews with, loaded once per family
"""
