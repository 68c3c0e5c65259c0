"""The project's one vocabulary: the closed sets of names that tables, importers, routers and reports share.

Everything that checks or enumerates a task group, an answer kind, a split, a trace status, a backend or a
table name imports it from here, so a new value is added in one place.
"""

from __future__ import annotations

TASK_GROUPS: tuple[str, ...] = ("ocr", "chart", "math", "general")
"""Coarse task families of `queries.task_group` (finer names go in `queries.task`)."""

VISUAL_FACTORS: tuple[str, ...] = ("small_text", "noise", "rotation", "density", "low_contrast")
"""Hidden rendering factors of a built-in query image (in `queries.source_meta.visual`, never given to
routers): the benchmark generator measures them and the simulated models are sensitive to them."""

ANSWER_KINDS: tuple[str, ...] = ("exact", "numeric", "choice", "text")
"""How an answer is scored: exact match, numeric tolerance, option letter, ANLS on free text."""

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
"""Values of `splits.split`; calibration rows are a subset of train."""

TRACE_STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "skipped")
"""Values of `traces.status`: only `ok` rows carry a quality."""

BACKENDS: tuple[str, ...] = ("ollama", "sim", "import", "local", "openai")
"""Values of `models.backend` (`local`: real models run on this machine by `collectors.local`; `openai`: any
server speaking OpenAI's chat-completions protocol)."""

SETTINGS: tuple[str, ...] = ("oriented", "cost")
"""Evaluation settings: quality-oriented (lambda = 0) and cost-aware (lambda sweep)."""

TABLE_NAMES: tuple[str, ...] = ("queries", "models", "traces", "splits", "eval_results", "routing_decisions",
                                 "pool_decisions")
"""The warehouse tables (each a Parquet folder and a DuckDB view of the same name)."""

PROGRESS_LOGGER = "lrouter.progress"
"""The Python logger long steps report progress on (training epochs, feature batches): plain ``logging``, so
library code needs no Dagster; the instance captures it into the run's event log (``python_logs`` in
dagster.yaml) and `lrouter run` prints it while the run runs (pipelines.progress)."""
