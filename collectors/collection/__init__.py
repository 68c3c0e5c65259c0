"""Trace collection: the async Ollama client with retries, backoff and a circuit breaker, and the resume
state that makes a killed collection continue where it stopped.

May import: `collectors.registry`, `collectors.scoring`, `warehouse`.
"""
