"""Serving routing decisions: the warm, self-refreshing `RouterService` and its HTTP front end
(Starlette + uvicorn; `limits.py` holds the request limits and JSON errors any front end here reuses).

May import: every other `router` subpackage and `warehouse`.
"""
