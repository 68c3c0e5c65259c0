"""Training LatentRouter (objective, schedule, EMA, early stopping), safetensors checkpoints, and the
artifact folder with its `latest` pointer.

May import: `router.data`, `router.models`, `warehouse`.
"""
