"""The OpenAI-compatible routing gateway (``lrouter gateway``): ``POST /v1/chat/completions`` picks a model
with the deployed router (or a named policy), forwards the request to that model's backend over HTTP, falls
back to the next-ranked model on upstream failure, and logs every served request for the feedback loop.

Modules: `config` (settings, upstream endpoints), `policies` (lrouter / lrouter:<lambda> / named / concrete
model), `schema` (OpenAI request parsing and errors), `upstream` (forwarding to OpenAI-compatible and Ollama
backends), `metrics` (Prometheus), `served_log` (the served_requests and feedback tables), `calibrate`
(lambda for a budget, on validation traces) and `app` (the Starlette app and server).

May import: `router.serving` and `warehouse`; never `collectors` (endpoints come from the models table or
config) and never Dagster.
"""
