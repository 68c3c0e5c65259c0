"""The default encoders as ONNX Runtime graphs, for routing requests as they arrive.

Why: a routed request encodes one short question (and maybe one image), and at that size PyTorch's eager
per-op overhead dominates. On 2 CPU cores all-MiniLM-L6-v2 takes ~14 ms per question eagerly and ~5 ms as an ONNX
Runtime graph; EfficientNet-Lite0 ~22 ms per image and ~11 ms. Same fp32 weights, outputs equal to ~1e-5
(tests/router/features/test_features.py). Graphs are exported in memory from the already-loaded modules when a service
starts (a few seconds, nothing downloaded); feature extraction keeps the eager modules by default, so stored
features do not depend on this runtime.

``onnx_int8`` is the one inexact runtime, for serving only: the text graph's MatMul weights quantized to int8 per
output channel (ONNX Runtime's dynamic quantization; activations quantized per call). A short question is bound
by reading the ~42 MB of fp32 layer weights, so a quarter of the bytes halves its time (8.6 -> 4.4 ms on one core
here), at a cosine of ~0.993 to the fp32 embedding (bench/serving_precision.py counts the changed decisions).
Activations are quantized per run, over the whole input, so MiniLMEncoder runs it one question at a time.
The image graph stays fp32: dynamically quantized convolutions are slower than fp32 ones on CPU.
"""

from __future__ import annotations

import importlib.util
import io
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

OPSET = 17
RUNTIMES = ("torch", "onnx", "onnx_int8", "auto")
GRAPH_RUNTIMES = ("onnx", "onnx_int8")
_EXPORT_LOCK = threading.Lock()


def onnx_available() -> bool:
    """Both the exporter's ``onnx`` and ``onnxruntime`` are importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def resolve_runtime(want: str, device: torch.device, dtype: torch.dtype, encoder: str) -> str:
    """"onnx", "onnx_int8" or "torch" for ``FeatureConfig.runtime``: graphs run on a float32 CPU only."""
    usable = device.type == "cpu" and dtype == torch.float32 and onnx_available()
    if want in GRAPH_RUNTIMES and not usable:
        raise RuntimeError(f"{encoder}: FeatureConfig.runtime={want!r} needs the CPU, float32 and the onnx + "
                           f"onnxruntime packages (device {device}, dtype {dtype}); use 'auto' or 'torch'")
    if want in GRAPH_RUNTIMES:
        return want
    return "onnx" if want == "auto" and usable else "torch"


class OnnxGraph:
    """``run(*arrays) -> outputs`` of ``module`` traced on ``sample`` with a dynamic batch axis (and the other
    axes named in ``dynamic``); ``int8``: its MatMul weights dynamically quantized (see the module docstring).

    ``threads`` intra-op threads, one when None: under load a routing batch shares the cores with HTTP parsing,
    image decoding and the upstream calls, and one thread per graph gave the gateway more throughput than two on
    2 cores (bench/gateway.py at concurrency 32: 13.1x vs 10.2x without images, 6.5x vs 6.1x with; one image batch
    alone runs ~1.5x faster on two threads for twice the CPU)."""

    def __init__(self, module: torch.nn.Module, sample: Sequence[torch.Tensor], inputs: Sequence[str],
                 outputs: Sequence[str], dynamic: dict[str, dict[int, str]], threads: int | None,
                 int8: bool = False):
        import onnxruntime as ort

        buf = io.BytesIO()
        # torch's exporter keeps process-wide state: two encoders built at once on two lanes must take turns
        with _EXPORT_LOCK, torch.no_grad(), warnings.catch_warnings():
            # the tracer warns about shape-dependent Python branches; the dynamic-shape tests cover them
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), tuple(sample), buf, input_names=list(inputs), output_names=list(outputs),
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
        graph = _int8_matmuls(buf.getvalue()) if int8 else buf.getvalue()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads or 1)
        opts.inter_op_num_threads = 1
        # ORT's default spin-then-sleep between ops: turning spinning off costs ~4 of a question's ~6 ms after an
        # idle gap (requests do not come back to back), and the threads sleep once the run is over
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        opts.log_severity_level = 3
        self.inputs = list(inputs)
        self.session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        self.int8 = int8

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, dict(zip(self.inputs, arrays, strict=True)))


def _int8_matmuls(graph: bytes) -> bytes:
    """``graph`` with its MatMul weights quantized to int8 per output channel (the quantizer writes files only:
    a temporary directory, removed at once)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="lrouter-int8-") as tmp:
        out = Path(tmp) / "int8.onnx"
        # shape inference leaves the exported MatMuls' outputs untyped; they are float32
        quantize_dynamic(onnx.load_from_string(graph), out, op_types_to_quantize=["MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return out.read_bytes()


class LastHiddenState(torch.nn.Module):
    """A Hugging Face encoder as (input_ids, attention_mask) -> last_hidden_state, for export."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def text_graph(model: torch.nn.Module, tokenizer, threads: int | None, int8: bool = False) -> OnnxGraph:
    """MiniLM's graph, exported on a padded pair so the attention-mask path is in it."""
    sample = tokenizer(["a question", "a somewhat longer question about a picture"], padding=True, return_tensors="pt")
    names = ("input_ids", "attention_mask", "last_hidden_state")
    return OnnxGraph(LastHiddenState(model), (sample["input_ids"], sample["attention_mask"]), names[:2], names[2:],
                     {n: {0: "batch", 1: "tokens"} for n in names}, threads, int8)


def image_graph(module: torch.nn.Module, size: int, threads: int | None) -> OnnxGraph:
    """The image encoder's (grid, pooled) graph for [B, 3, size, size] inputs."""
    sample = torch.zeros(2, 3, size, size)
    return OnnxGraph(module, (sample,), ("pixels",), ("grid", "pooled"),
                     {n: {0: "batch"} for n in ("pixels", "grid", "pooled")}, threads)
