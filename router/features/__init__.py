"""Frozen-encoder features of images and questions (EfficientNet-Lite0 + MiniLM offline, open_clip when
configured), their cache, imported embeddings and categorical side features.

Modules: ``config`` (FeatureConfig), ``encoders`` (loading and running the frozen encoders), ``cache``
(content-addressed store), ``extract`` (batch extraction of a queries table, one request at routing time),
``feature_set`` (the FeatureSet container), ``side`` (side features), ``imported`` (a benchmark's embeddings).

May import: `warehouse`.
"""
