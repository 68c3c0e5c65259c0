"""Frozen-encoder features of images and questions (EfficientNet-Lite0 + MiniLM offline, open_clip when
configured), their cache, imported embeddings and categorical side features.

May import: `warehouse`.
"""
