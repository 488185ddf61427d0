"""INT8 quantization of exported graphs with ``onnxruntime.quantization``.

Two methods (see docs/edge.md for what they cost and gain on a 2-core AVX-512 CPU):

* ``dynamic``: weights of MatMul (and Gather, for the text encoder's embeddings) to int8, activations
  quantized on the fly. No calibration. Convolutions stay float32.
* ``static``: QDQ format, per-channel int8 weights and uint8 activations for Conv, MatMul (constant
  weights only) and Gemm, with activation ranges calibrated (MinMax) on U-Net inputs recorded from real
  sampling runs. ORT fuses the QDQ pairs into QLinearConv / integer MatMul kernels at session creation.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

METHODS = ("dynamic", "static")
DEFAULT_UNET_METHOD = "static"  # measured fastest at acceptable error: docs/edge.md
LARGE = 1536 * 2**20  # graphs above this are written with external data


def _files(dst: Path) -> list[Path]:
    data = dst.with_name(dst.name + ".data")
    return [dst] + ([data] if data.is_file() else [])


def _is_large(src: Path) -> bool:
    data = src.with_name(src.name + ".data")
    return src.stat().st_size + (data.stat().st_size if data.is_file() else 0) > LARGE


def quantize_dynamic_int8(src: Path, dst: Path, *, op_types: Sequence[str] = ("MatMul",)) -> list[Path]:
    """Dynamic INT8 of ``op_types`` (weights int8, per tensor). Returns the files written."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(op_types), weight_type=QuantType.QInt8,
                     per_channel=False, use_external_data_format=_is_large(src),
                     extra_options={"MatMulConstBOnly": True})
    return _files(dst)


class _Reader:
    """Feeds recorded inputs to the calibrator."""

    def __init__(self, samples: Sequence[dict]):
        self._samples = list(samples)
        self._i = 0

    def get_next(self):
        if self._i >= len(self._samples):
            return None
        self._i += 1
        return self._samples[self._i - 1]

    def rewind(self):
        self._i = 0

    def __len__(self):
        return len(self._samples)

    def set_range(self, start_index: int, end_index: int):
        self._samples = self._samples[start_index:end_index]
        self._i = 0


def calibrate(src: Path, samples: Sequence[dict], cache: Path, *,
              op_types: Sequence[str] = ("Conv", "MatMul", "Gemm")) -> Path:
    """MinMax activation ranges of ``src`` over ``samples``, saved to ``cache`` (ORT's JSON format).

    Done on its own (not inside ``quantize_static``) so that the calibration session and its augmented
    model are freed before the quantizer loads its own copy of the graph: peak memory is about half."""
    import gc
    import tempfile

    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    if not samples:
        raise ValueError("static quantization needs calibration samples")
    with tempfile.TemporaryDirectory(prefix=".calib-", dir=Path(cache).parent) as tmp:
        calibrator = create_calibrator(Path(src), list(op_types),
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax, use_external_data_format=True,
                                       providers=["CPUExecutionProvider"])
        calibrator.collect_data(_Reader(samples))
        ranges = calibrator.compute_data()
        del calibrator
        gc.collect()
    save_tensors_data(ranges, cache)
    return Path(cache)


def quantize_static_int8(src: Path, dst: Path, samples: Sequence[dict], *,
                         op_types: Sequence[str] = ("Conv", "MatMul", "Gemm")) -> list[Path]:
    """Static QDQ INT8 calibrated on ``samples`` (dicts of graph input name -> numpy array)."""
    import gc

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src, dst = Path(src), Path(dst)
    cache = dst.with_name(dst.stem + ".calibration.json")
    try:
        calibrate(src, samples, cache, op_types=op_types)
        gc.collect()
        quantize_static(
            str(src), str(dst), None, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types), per_channel=True, reduce_range=False,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            use_external_data_format=_is_large(src), calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=str(cache),
            extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True, "ActivationSymmetric": False})
    finally:
        cache.unlink(missing_ok=True)
        src.with_name(src.stem + "-inferred.onnx").unlink(missing_ok=True)  # the quantizer's shape-inference copy
    return _files(dst)
