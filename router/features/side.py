"""Categorical and size side features of a query (task group, dataset, question length, image size).

Why: the same column layout must be produced at extraction time and for one request at routing time (with the
vocabulary the router was trained with), so both paths go through ``side_features``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def side_features(
    questions: Sequence[str],
    task_groups: Sequence[str],
    datasets: Sequence[str],
    image_wh: np.ndarray,
    has_image: np.ndarray,
    task_group_vocab: Sequence[str],
    dataset_vocab: Sequence[str],
) -> tuple[np.ndarray, list[str]]:
    """One-hot task group and dataset (unknown -> 'other'), log question length, log image size, has_image."""
    tg_vocab, ds_vocab = list(task_group_vocab), list(dataset_vocab)
    names = ([f"task_group={g}" for g in tg_vocab] + ["task_group=other"]
             + [f"dataset={d}" for d in ds_vocab] + ["dataset=other"]
             + ["question_chars_log", "question_words_log", "image_width_log", "image_height_log", "has_image"])
    n = len(questions)
    out = np.zeros((n, len(names)), dtype=np.float32)
    tg_pos = {g: i for i, g in enumerate(tg_vocab)}
    ds_pos = {d: i for i, d in enumerate(ds_vocab)}
    off_ds = len(tg_vocab) + 1
    off_num = off_ds + len(ds_vocab) + 1
    for i in range(n):
        out[i, tg_pos.get(task_groups[i], len(tg_vocab))] = 1.0
        out[i, off_ds + ds_pos.get(datasets[i], len(ds_vocab))] = 1.0
        q = questions[i] or ""
        out[i, off_num] = math.log1p(len(q))
        out[i, off_num + 1] = math.log1p(len(q.split()))
    wh = np.asarray(image_wh, dtype=np.float64).reshape(n, 2)
    hi = np.asarray(has_image, dtype=bool)
    out[:, off_num + 2] = np.where(hi, np.log1p(wh[:, 0]), 0.0)
    out[:, off_num + 3] = np.where(hi, np.log1p(wh[:, 1]), 0.0)
    out[:, off_num + 4] = hi.astype(np.float32)
    return out, names


def side_vector(side_names: Sequence[str], question: str, task_group: str, dataset: str,
                image_wh: tuple[int, int] | None) -> np.ndarray:
    """The side features of one request in the column layout ``side_names`` of an existing FeatureSet
    (routing time must use the vocabulary the router was trained with)."""
    tg = [n.split("=", 1)[1] for n in side_names if n.startswith("task_group=") and n != "task_group=other"]
    ds = [n.split("=", 1)[1] for n in side_names if n.startswith("dataset=") and n != "dataset=other"]
    has = image_wh is not None
    vec, names = side_features([question], [task_group], [dataset], np.asarray([image_wh or (0, 0)]),
                               np.array([has]), tg, ds)
    if names != list(side_names):
        raise ValueError(f"side_names {list(side_names)} are not a layout side_features produces")
    return vec[0]
