"""Trace collection: the async Ollama client (`client`), its retries, backoff and circuit breaker
(`retries`), and the resume state that makes a killed collection continue where it stopped (`resume`).

May import: `collectors.registry`, `collectors.scoring`, `warehouse`.
"""
