"""Subcommands over the warehouse and the pipeline: query, models, import, lineage, run."""

from __future__ import annotations

import sys

from pipelines.cli.common import (
    CliError,
    _one_line,
    _registry_path,
    _warehouse,
    has_warehouse,
    no_warehouse_message,
    project_instance,
    require_warehouse,
)


def cmd_query(args) -> int:
    """Read-only SQL with a row cap, a timeout and Ctrl-C; exit 2 refused, 1 failed, 3 timed out, 130 Ctrl-C."""
    import os

    import polars as pl

    from warehouse.catalog import QueryRefused, query_rows
    from warehouse.query import QueryInterrupted, QueryTimeout, to_csv, to_json, to_polars

    wh, _ = _warehouse(args)
    try:
        res = query_rows(wh, args.sql, max_rows=args.max_rows or None, timeout_s=args.timeout or None)
    except QueryRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except QueryTimeout as exc:
        print(f"{exc} (raise it with --timeout)", file=sys.stderr)
        return 3
    except QueryInterrupted:
        print("query interrupted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C: DuckDB may still be running, leave without waiting
        print("query interrupted", file=sys.stderr, flush=True)
        os._exit(130)
    except Exception as exc:  # duckdb errors: show the message, not a traceback
        print(f"query failed: {exc}", file=sys.stderr)
        return 1
    if args.format == "csv":
        sys.stdout.write(to_csv(res.table))
    elif args.format == "json":
        sys.stdout.write(to_json(res.table) + "\n")
    else:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200):
            print(to_polars(res.table))
    sys.stdout.flush()
    if res.truncated:
        print(f"(truncated at {res.max_rows:,} rows; use --max-rows)", file=sys.stderr)
    return 0


def check_endpoint(entry) -> None:
    """Refuse a model whose server cannot be reached or does not serve it; nothing is written before."""
    import ollama

    from collectors.registry import RegistryError

    if entry.backend == "sim" and not entry.endpoint:
        from collectors.simulator.specs import ALL_MODELS

        names = list(ALL_MODELS)
        if entry.model_id not in names:
            raise RegistryError(f"no simulated model named {entry.model_id!r}; simulated models: {names}")
        return
    if entry.backend == "import":
        return
    import os

    if entry.backend == "openai":
        from collectors.collection.openai_protocol import check_openai_server

        key = ""
        if entry.api_key_env:
            key = os.environ.get(entry.api_key_env, "")
            if not key:
                raise RegistryError(f"environment variable {entry.api_key_env} (--api-key-env) is not set; "
                                    "export the key there first")
        problem = check_openai_server(entry.endpoint, entry.served_name, api_key=key)
        if problem:
            raise RegistryError(problem)
        return

    host = entry.endpoint or os.environ.get("OLLAMA_HOST", "http://127.0.0.1:11434")
    try:
        tags = ollama.Client(host=host, timeout=5).list()
    except Exception as exc:
        raise RegistryError(f"endpoint for {entry.model_id!r} is unreachable: {type(exc).__name__}: {exc}") from exc
    served = [m.model for m in tags.models]
    if entry.model_id not in served:
        raise RegistryError(f"the server does not serve {entry.model_id!r}; it lists {served}")


def cmd_models(args) -> int:
    from collectors.registry import (
        ModelEntry,
        RegistryError,
        add_model,
        disable_model,
        ensure_registry,
        models_table,
    )

    wh, home = _warehouse(args)
    path = _registry_path(home)
    if not path.exists() and not has_warehouse(home):  # never create a fresh home by accident
        raise CliError(no_warehouse_message(home), code=1)
    try:
        if args.models_cmd == "add":
            entry = ModelEntry(
                model_id=args.name, backend=args.backend, endpoint=args.endpoint or "",
                api_key_env=args.api_key_env or "",
                price_in_per_mtok=args.price_in, price_out_per_mtok=args.price_out, params_b=args.params_b,
                simulated=args.backend == "sim", description=args.description or "",
                server_model=args.server_model or "", price_per_image_usd=args.price_per_image,
                max_concurrency=args.max_concurrency, requests_per_minute=args.rpm,
            )
            entries = add_model(path, entry, check_endpoint=None if args.no_check else check_endpoint)
            print(f"added {args.name} to {path}; the model sensor will collect its traces and recalibrate")
        elif args.models_cmd == "disable":
            entries = disable_model(path, args.name)
            print(f"disabled {args.name}: it is masked out of routing from now on")
        else:
            entries = ensure_registry(path)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # pydantic validation of the new entry
        print(f"error: invalid model entry: {_one_line(exc)}", file=sys.stderr)
        return 2
    table = models_table(entries)
    wh.ensure()
    wh.write_table("models", table)
    if args.models_cmd == "list":
        import polars as pl

        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=50, tbl_width_chars=200):
            print(table.select("model_id", "backend", "price_in_per_mtok", "price_out_per_mtok", "params_b",
                               "active", "simulated"))
    return 0


def cmd_import(args) -> int:
    from pipelines.importing import run_import

    return run_import(args, *_warehouse(args))


def cmd_lineage(args) -> int:
    from pipelines.lineage import TABLE_ASSETS, print_lineage

    if args.table not in TABLE_ASSETS:
        raise CliError(f"unknown table {args.table!r}; known: {', '.join(sorted(TABLE_ASSETS))}")
    wh, home = _warehouse(args)
    require_warehouse(home)
    with project_instance(home) as instance:
        return print_lineage(args.table, wh, home, instance=instance)


def cmd_run(args) -> int:
    """Launch stages as named jobs in-process on the project's Dagster instance."""
    from pipelines.runner import RunOptions, StageFailed, run_stage

    home = _warehouse(args)[1]
    if args.stage not in ("setup", "all") and not has_warehouse(home):
        raise CliError(f"{no_warehouse_message(home)} (or start with `lrouter run setup`)", code=1)
    if args.queries is not None and args.queries < 1:
        raise CliError(f"--queries must be at least 1, not {args.queries}")
    opts = RunOptions(n_queries=args.queries, seed=args.seed, models=tuple(args.model), preset=args.preset)
    with project_instance(home) as instance:
        if args.stage == "collect":
            _sync_model_partitions(instance, home)
        try:
            run_stage(args.stage, instance, opts, log=lambda line: print(line, flush=True), home=home)
        except (StageFailed, ValueError) as exc:
            raise CliError(_one_line(exc), code=1) from exc
    if args.stage in ("evaluate", "all"):
        from pipelines.demo import newest_report

        report = newest_report(home / "warehouse" / "reports")
        if report is not None:
            print(f"report: {report}\nreport (HTML, with plots): {report.with_suffix('.html')}")
    return 0


def _sync_model_partitions(instance, home) -> None:
    """Give every active registry model its trace partition (as the candidate_models asset does), so a model
    just added with `lrouter models add` is collected by the next `lrouter run collect`."""
    from collectors.registry import load_registry

    path = _registry_path(home)
    if not path.exists():
        return
    known = set(instance.get_dynamic_partitions("models"))
    new = [e.model_id for e in load_registry(path) if e.active and e.model_id not in known]
    if new:
        instance.add_dynamic_partitions("models", new)
