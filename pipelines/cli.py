"""The ``lrouter`` command line: query the warehouse, manage the registry, route, import, simulate.

Heavy imports (torch, dagster) happen inside the subcommands so ``lrouter query`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _warehouse(args):
    from warehouse.store import Warehouse, lrouter_home

    home = Path(args.home).resolve() if getattr(args, "home", None) else lrouter_home()
    return Warehouse(home / "warehouse"), home


def ensure_dagster_home() -> Path:
    """The Dagster instance the CLI uses: $DAGSTER_HOME, else the project's own (the folder holding its
    dagster.yaml, as `make` sets it), so `lrouter run` / `lineage` see the same runs as the UI."""
    import os

    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    project = Path(__file__).resolve().parents[1]
    home = project if (project / "dagster.yaml").exists() else Path.cwd()
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _registry_path(home: Path) -> Path:
    from collectors.registry import default_registry_path

    return default_registry_path(home)


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
        print(exc, file=sys.stderr)
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
    try:
        if args.models_cmd == "add":
            entry = ModelEntry(
                model_id=args.name, backend=args.backend, endpoint=args.endpoint or "",
                api_key_env=args.api_key_env or "",
                price_in_per_mtok=args.price_in, price_out_per_mtok=args.price_out, params_b=args.params_b,
                simulated=args.backend == "sim", description=args.description or "",
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
        print(f"error: invalid model entry: {exc}", file=sys.stderr)
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


def cmd_sim_serve(args) -> int:
    from collectors.simulator.server import serve_forever

    serve_forever(port=args.port, host=args.host, answer_key=Path(args.answer_key) if args.answer_key else None,
                  time_scale=args.time_scale, seed=args.seed, include_held_out=args.include_held_out)
    return 0


def cmd_route(args) -> int:
    from router.serving.service import load_router

    router = load_router(home=_warehouse(args)[1])
    pool = [p for p in args.pool.split(",") if p] if args.pool else None
    ranked = router.route(args.image, args.question, pool=pool, lam=args.lam)
    if args.format == "json":
        print(json.dumps(ranked, indent=2))
    else:
        print(f"{'rank':<5}{'model':<28}{'quality':>9}{'sigma':>8}{'cost_usd':>12}{'utility':>9}")
        for i, r in enumerate(ranked, 1):
            print(f"{i:<5}{r['model_id']:<28}{r['quality']:>9.3f}{r['uncertainty']:>8.3f}"
                  f"{r['cost_usd']:>12.2e}{r['utility']:>9.3f}")
    return 0


def cmd_serve(args) -> int:
    from router.serving.http import make_server
    from router.serving.limits import limits_from_args, run_server
    from router.serving.service import load_router

    try:
        limits = limits_from_args(args)  # checked before the (slow) service build
    except ValueError as exc:
        print(f"lrouter serve: {exc}", file=sys.stderr)
        return 2
    service = load_router(home=_warehouse(args)[1])
    service.warm_up()  # load the encoders now, not on the first request
    server = make_server(service, host=args.host, port=args.port, limits=limits)

    def started(port: int) -> None:
        print(f"routing on http://{args.host}:{port}  (POST /route, GET /health); checkpoint "
              f"{service.checkpoint.name}; models: {', '.join(service.data.model_ids)}", flush=True)

    try:
        run_server(server, started)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_import(args) -> int:
    from pipelines.importing import run_import

    return run_import(args, *_warehouse(args))


def cmd_lineage(args) -> int:
    from pipelines.lineage import print_lineage

    ensure_dagster_home()
    return print_lineage(args.table, *_warehouse(args))


def cmd_run(args) -> int:
    """Launch stages as named jobs in-process on the project's Dagster instance."""
    import os

    import dagster as dg

    from pipelines.runner import RunOptions, StageFailed, run_stage

    if getattr(args, "home", None):
        os.environ["LROUTER_HOME"] = str(Path(args.home).resolve())
    opts = RunOptions(n_queries=args.queries, seed=args.seed, models=tuple(args.model), preset=args.preset)
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        try:
            run_stage(args.stage, instance, opts)
        except (StageFailed, ValueError) as exc:
            print(f"lrouter run: {exc}", file=sys.stderr)
            return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lrouter", description="Multimodal outcome traces -> LatentRouter")
    p.add_argument("--home", help="LROUTER_HOME (default $LROUTER_HOME or ./data)")
    sub = p.add_subparsers(dest="cmd", required=True)

    q = sub.add_parser("query", help="read-only SQL over the warehouse views (DuckDB)")
    q.add_argument("sql")
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    q.add_argument("--max-rows", type=int, default=10_000, help="stop after N rows (default 10,000; 0: no cap)")
    q.add_argument("--timeout", type=float, default=300.0, help="interrupt after SECONDS (default 300; 0: none)")
    q.set_defaults(func=cmd_query)

    m = sub.add_parser("models", help="manage the candidate model registry")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    add = msub.add_parser("add", help="register a model (or re-enable a disabled one)")
    add.add_argument("name")
    add.add_argument("--backend", default="ollama", help="ollama | sim")
    add.add_argument("--endpoint", default="", help="server URL (default: $OLLAMA_HOST / embedded simulator)")
    add.add_argument("--api-key-env", default="",
                     help="environment variable holding this model's bearer token (default: none for an own "
                          "--endpoint; $OLLAMA_API_KEY for models on the default host)")
    add.add_argument("--price-in", type=float, default=0.0, help="USD per million input tokens")
    add.add_argument("--price-out", type=float, default=0.0, help="USD per million output tokens")
    add.add_argument("--params-b", type=float, default=None, help="parameters in billions")
    add.add_argument("--description", default="")
    add.add_argument("--no-check", action="store_true", help="skip the endpoint reachability check")
    msub.add_parser("list", help="list registered models")
    dis = msub.add_parser("disable", help="mask a model out of collection and routing")
    dis.add_argument("name")
    m.set_defaults(func=cmd_models)

    r = sub.add_parser("route", help="rank the candidate models for one image+question")
    r.add_argument("--image", required=True)
    r.add_argument("--question", required=True)
    r.add_argument("--lambda", dest="lam", type=float, default=0.0)
    r.add_argument("--pool", default="", help="comma-separated subset of models")
    r.add_argument("--format", choices=["table", "json"], default="table")
    r.set_defaults(func=cmd_route)

    sv = sub.add_parser("serve", help="answer routing requests over HTTP (POST /route, GET /health)")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    sv.add_argument("--port", type=int, default=8787)
    from router.serving.limits import add_limit_arguments

    add_limit_arguments(sv)  # --max-body-bytes, --max-question-chars, --max-image-pixels, --request-timeout, ...
    sv.set_defaults(func=cmd_serve)

    s = sub.add_parser("sim-serve", help="serve the simulated pool over Ollama's HTTP API")
    s.add_argument("--port", type=int, default=11434)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--answer-key", default="", help="queries Parquet (default: the warehouse queries table)")
    s.add_argument("--time-scale", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--include-held-out", action="store_true")
    s.set_defaults(func=cmd_sim_serve)

    i = sub.add_parser("import", help="import a routing benchmark or your own queries")
    i.add_argument("kind", choices=["mmr-bench", "vl-routerbench", "long", "queries"])
    i.add_argument("path")
    i.add_argument("--images", default="", help="image folder")
    i.add_argument("--queries", default="", help="queries file (long format)")
    i.add_argument("--benchmark", default="", help="benchmark name to record")
    i.add_argument("--on-error", choices=["skip", "fail"], default="fail")
    i.add_argument("--replace", action="store_true", help="drop the queries, trace partitions and models "
                   "not in the import (default: merge, keeping them)")
    i.add_argument("--side-features", default="", help="MMR-Bench: comma-separated columns to use as "
                   "categorical side features")
    i.set_defaults(func=cmd_import)

    run = sub.add_parser("run", help="run pipeline stages without the UI (named jobs, visible in the UI)")
    run.add_argument("stage", choices=["setup", "collect", "features", "train", "evaluate", "all"],
                     help="setup = queries/models/splits; collect = traces per model; features = features, "
                          "profiles, views; train = router + pool routing; evaluate = report; all = in order")
    run.add_argument("--model", action="append", default=[], help="collect only this model (repeatable)")
    run.add_argument("--queries", type=int, default=None,
                     help="setup: (re)generate the built-in benchmark with this many queries (default: keep the "
                          "warehouse's queries, built-in or imported)")
    run.add_argument("--seed", type=int, default=0, help="seed of the built-in benchmark")
    run.add_argument("--preset", choices=["quick", "demo", "paper"], default=None,
                     help="evaluation preset (default: the asset's, demo)")
    run.set_defaults(func=cmd_run)

    lin = sub.add_parser("lineage", help="which run and inputs produced a table")
    lin.add_argument("table")
    lin.set_defaults(func=cmd_lineage)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "sim-serve" and not args.answer_key:
        wh, _ = _warehouse(args)
        if wh.has_table("queries"):
            args.answer_key = str(wh.table_path("queries"))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
