"""The ``lrouter`` command line: query the warehouse, manage the registry, route, import, run the pipeline,
serve. ``common`` holds what every subcommand shares, ``data`` and ``serving`` the subcommands, ``parser``
the arguments and the dispatcher. Heavy imports (torch, dagster) happen inside the subcommands so
``lrouter query`` starts fast.
"""

from pipelines.cli.parser import main

__all__ = ["main"]
