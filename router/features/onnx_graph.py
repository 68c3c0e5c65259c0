"""The default encoders as ONNX Runtime graphs, for routing requests as they arrive.

Why: a routed request encodes one short question (and maybe one image), and at that size PyTorch's eager
per-op overhead dominates. On 2 CPU cores all-MiniLM-L6-v2 takes ~14 ms per question eagerly and ~5 ms as an ONNX
Runtime graph; EfficientNet-Lite0 ~22 ms per image and ~11 ms. Same fp32 weights, outputs equal to ~1e-5
(tests/router/test_features.py). Graphs are exported in memory from the already-loaded modules when a service
starts (a few seconds, nothing downloaded or written); feature extraction keeps the eager modules by default, so
stored features do not depend on this runtime.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch

OPSET = 17
RUNTIMES = ("torch", "onnx", "auto")


def onnx_available() -> bool:
    """Both the exporter's ``onnx`` and ``onnxruntime`` are importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def resolve_runtime(want: str, device: torch.device, dtype: torch.dtype, encoder: str) -> str:
    """"onnx" or "torch" for ``FeatureConfig.runtime``: graphs run on a float32 CPU only."""
    usable = device.type == "cpu" and dtype == torch.float32 and onnx_available()
    if want == "onnx" and not usable:
        raise RuntimeError(f"{encoder}: FeatureConfig.runtime='onnx' needs the CPU, float32 and the onnx + "
                           f"onnxruntime packages (device {device}, dtype {dtype}); use 'auto' or 'torch'")
    return "onnx" if want == "onnx" or (want == "auto" and usable) else "torch"


class OnnxGraph:
    """``run(*arrays) -> outputs`` of ``module`` traced on ``sample`` with a dynamic batch axis (and the other
    axes named in ``dynamic``)."""

    def __init__(self, module: torch.nn.Module, sample: Sequence[torch.Tensor], inputs: Sequence[str],
                 outputs: Sequence[str], dynamic: dict[str, dict[int, str]], threads: int):
        import onnxruntime as ort

        buf = io.BytesIO()
        # the tracer warns about shape-dependent Python branches; the dynamic-shape tests cover them
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), tuple(sample), buf, input_names=list(inputs), output_names=list(outputs),
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        # ORT's default spin-then-sleep between ops: turning spinning off costs ~4 of a question's ~6 ms after an
        # idle gap (requests do not come back to back), and the threads sleep once the run is over
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        opts.log_severity_level = 3
        self.inputs = list(inputs)
        self.session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, dict(zip(self.inputs, arrays, strict=True)))


class LastHiddenState(torch.nn.Module):
    """A Hugging Face encoder as (input_ids, attention_mask) -> last_hidden_state, for export."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def text_graph(model: torch.nn.Module, tokenizer, threads: int) -> OnnxGraph:
    """MiniLM's graph, exported on a padded pair so the attention-mask path is in it."""
    sample = tokenizer(["a question", "a somewhat longer question about a picture"], padding=True, return_tensors="pt")
    names = ("input_ids", "attention_mask", "last_hidden_state")
    return OnnxGraph(LastHiddenState(model), (sample["input_ids"], sample["attention_mask"]), names[:2], names[2:],
                     {n: {0: "batch", 1: "tokens"} for n in names}, threads)


def image_graph(module: torch.nn.Module, size: int, threads: int) -> OnnxGraph:
    """The image encoder's (grid, pooled) graph for [B, 3, size, size] inputs."""
    sample = torch.zeros(2, 3, size, size)
    return OnnxGraph(module, (sample,), ("pixels",), ("grid", "pooled"),
                     {n: {0: "batch"} for n in ("pixels", "grid", "pooled")}, threads)
