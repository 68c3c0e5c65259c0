"""The simulated candidate pool: documented, deterministic model specs and behaviour, fault injection, and
an HTTP server speaking Ollama's API on loopback, so the real client collects from it like from a real server.

May import: the standard library, numpy, PIL. Nothing of ours but `collectors.scoring`.
"""
