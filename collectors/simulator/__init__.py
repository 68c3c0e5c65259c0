"""The simulated candidate pool: documented, deterministic model specs and behaviour, fault injection, and
an HTTP server speaking Ollama's API on loopback, so the real client collects from it like from a real server.

`specs` (the pool), `behaviour` (correctness, replies, tokens, latencies), `faults`, `answer_key`,
`protocol` (Ollama request / reply shapes), `handler` (HTTP) and `server` (`SimServer`, `serve_forever`).

May import: the standard library, numpy, polars, PIL and `warehouse.vocabulary`. Nothing else of ours.
"""
