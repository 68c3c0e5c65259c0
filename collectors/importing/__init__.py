"""Importers of published routing data (MMR-Bench CSV, VL-RouterBench folders, long format, query JSONL):
one module per format, shared decisions in `common`, row validation, and ingest into the warehouse.

Every importer is a pure function (it reads files, writes nothing) returning an `ImportResult` whose frames
conform to `warehouse.schemas`; `ingest.apply_import` writes it only when the import succeeded. The one
exception is `import_custom_queries(copy_to=...)`, which copies images after validation passed.

May import: `collectors.registry`, `warehouse`.
"""

from collectors.importing.common import (
    ImportResult,
    copy_images,
    infer_answer_kind,
    query_id_for,
    task_group_for,
)
from collectors.importing.dispatch import FORMATS, ImportOptions, import_benchmark
from collectors.importing.long_format import export_long, import_long, import_long_dir
from collectors.importing.mmr_bench import import_mmr_bench
from collectors.importing.queries_jsonl import import_custom_queries
from collectors.importing.validation import ImportValidationError
from collectors.importing.vl_routerbench import import_vl_routerbench

__all__ = [
    "FORMATS",
    "ImportOptions",
    "ImportResult",
    "ImportValidationError",
    "copy_images",
    "export_long",
    "import_benchmark",
    "import_custom_queries",
    "import_long",
    "import_long_dir",
    "import_mmr_bench",
    "import_vl_routerbench",
    "infer_answer_kind",
    "query_id_for",
    "task_group_for",
]
