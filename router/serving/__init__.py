"""Serving routing decisions: the warm, self-refreshing `RouterService` and its HTTP front end.

May import: every other `router` subpackage and `warehouse`.
"""
