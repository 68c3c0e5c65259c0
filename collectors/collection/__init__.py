"""Trace collection: the collector (`client`) over one small protocol interface (`protocol`) with one module
per wire protocol (`ollama_protocol`: Ollama, the simulator and the local models; `openai_protocol`: any
OpenAI-compatible server), its retries, backoff and circuit breaker (`retries`), the per-model rate limiter
(`limits`), and the resume state that makes a killed collection continue where it stopped (`resume`).

May import: `collectors.registry`, `collectors.scoring`, `warehouse`.
"""
