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
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

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


def weight_nodes(graph, op_types: Sequence[str]) -> list:
    """Nodes of ``op_types`` worth quantizing: MatMuls only when their second input is a weight (a constant).
    A MatMul of two activations (attention scores in a graph without fused attention) gains nothing from
    INT8 and drags the Softmax between them into a slow QLinearSoftmax."""
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n for n in graph.node if n.op_type in op_types
            and (n.op_type != "MatMul" or (len(n.input) > 1 and n.input[1] in constants))]


def calibrate(src: Path, samples: Sequence[dict], cache: Path, *,
              op_types: Sequence[str] = ("Conv", "MatMul", "Gemm")) -> Path:
    """MinMax ranges of the activations around ``op_types`` nodes of ``src`` over ``samples``, written to
    ``cache`` in ORT's calibration-cache format (``quantize_static(calibration_cache_path=...)`` reads it).

    ORT's own calibrator loads, shape-infers, augments and re-saves the whole graph with its weights:
    more than 20 GB for the SD1.5 U-Net. Here only the graph structure is loaded; ReduceMin/ReduceMax
    outputs are added and the augmented graph is saved beside ``src`` so it reads the same weight file.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, save_tensors_data

    if not samples:
        raise ValueError("static quantization needs calibration samples")
    src = Path(src)
    model = onnx.load(str(src), load_external_data=False)
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    wanted: list[str] = []
    seen: set[str] = set()
    for node in weight_nodes(graph, op_types):
        for name in [*node.input, *node.output]:
            if name and name not in constants and name not in seen:
                seen.add(name)
                wanted.append(name)
    # each Reduce node goes right after the node producing its tensor: ORT runs nodes in list order where it
    # can, and a reduction left at the end of the list would keep every calibrated activation alive
    reduces: dict[str, list] = {}
    outputs = []
    for i, name in enumerate(wanted):
        for op in ("ReduceMin", "ReduceMax"):
            out = f"{name}__{op}"
            reduces.setdefault(name, []).append(helper.make_node(op, [name], [out], keepdims=0, name=f"calib_{op}_{i}"))
    nodes = [n for name in graph.input for n in reduces.pop(name.name, [])]
    for node in graph.node:
        nodes.append(node)
        for out in node.output:
            nodes.extend(reduces.pop(out, []))
    del graph.node[:]
    graph.node.extend(nodes)
    # ORT orders execution by a depth-first walk from the graph outputs: listing the reductions first, in
    # the order their tensors are produced, makes each one run (and free its tensor) right after its producer
    original = list(graph.output)
    del graph.output[:]
    for node in nodes:
        if node.name.startswith("calib_Reduce"):
            outputs.append(node.output[0])
            graph.output.append(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, []))
    graph.output.extend(original)
    wanted = [o.rsplit("__", 1)[0] for o in outputs[0::2]]
    augmented = src.with_name(f".{src.stem}.calib.onnx")
    onnx.save_model(model, str(augmented))  # weights stay in src's external data file
    del model, graph
    try:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(augmented), sess_options=opts, providers=["CPUExecutionProvider"])
        lo = np.full(len(wanted), np.inf, dtype=np.float32)
        hi = np.full(len(wanted), -np.inf, dtype=np.float32)
        for feeds in samples:
            values = session.run(outputs, feeds)
            lo = np.minimum(lo, np.array(values[0::2], dtype=np.float32))
            hi = np.maximum(hi, np.array(values[1::2], dtype=np.float32))
        del session
    finally:
        augmented.unlink(missing_ok=True)
    ranges = TensorsData(CalibrationMethod.MinMax,
                         {name: (np.array([lo[i]], dtype=np.float32), np.array([hi[i]], dtype=np.float32))
                          for i, name in enumerate(wanted) if np.isfinite(lo[i]) and np.isfinite(hi[i])})
    save_tensors_data(ranges, cache)
    return Path(cache)


def quantize_static_int8(src: Path, dst: Path, samples: Sequence[dict], *,
                         op_types: Sequence[str] = ("Conv", "MatMul", "Gemm")) -> list[Path]:
    """Static QDQ INT8 calibrated on ``samples`` (dicts of graph input name -> numpy array)."""
    import gc

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src, dst = Path(src), Path(dst)
    cache = dst.with_name(dst.stem + ".calibration.json")
    graph = onnx.load(str(src), load_external_data=False).graph
    keep = {n.name for n in weight_nodes(graph, op_types)}
    exclude = [n.name for n in graph.node if n.op_type in op_types and n.name not in keep]
    del graph
    try:
        calibrate(src, samples, cache, op_types=op_types)
        gc.collect()
        quantize_static(
            str(src), str(dst), None, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types), per_channel=True, reduce_range=False,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            use_external_data_format=_is_large(src), calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=str(cache), nodes_to_exclude=exclude,
            extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True, "ActivationSymmetric": False})
    finally:
        cache.unlink(missing_ok=True)
        src.with_name(src.stem + "-inferred.onnx").unlink(missing_ok=True)  # the quantizer's shape-inference copy
    return _files(dst)
