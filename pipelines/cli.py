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


class CliError(Exception):
    """A failure the user can fix: ``main`` prints it as one line (no traceback) and exits with ``code``."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def no_warehouse_message(home: Path) -> str:
    return f"no warehouse under {home}; run `make demo`, pass --home or set LROUTER_HOME"


def has_warehouse(home: Path) -> bool:
    """True when ``home`` holds warehouse tables or trace partitions (not just an empty folder tree)."""
    root = home / "warehouse"
    return any((root / "tables").glob("*.parquet")) or any((root / "traces").glob("*.parquet"))


def require_warehouse(home: Path) -> None:
    """Refuse before anything is created, so a typo in --home or a run from another folder is named as such."""
    if not has_warehouse(home):
        raise CliError(no_warehouse_message(home), code=1)


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


def _rebased_storage(home: Path) -> dict:
    """dagster.yaml's relative ``base_dir``s made absolute under ``home``: Dagster reads them relative to the
    working directory, so `lrouter lineage` run from another folder would open (and create) an empty
    instance there instead of the one the UI shows."""
    import yaml

    path = home / "dagster.yaml"
    cfg = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    out: dict = {}
    sqlite = (cfg.get("storage") or {}).get("sqlite")
    if isinstance(sqlite, dict) and isinstance(sqlite.get("base_dir"), str) and not Path(sqlite["base_dir"]).is_absolute():
        out["storage"] = {**cfg["storage"], "sqlite": {**sqlite, "base_dir": str(home / sqlite["base_dir"])}}
    for key in ("local_artifact_storage", "compute_logs"):
        section = cfg.get(key)
        base = ((section or {}).get("config") or {}).get("base_dir")
        if isinstance(base, str) and not Path(base).is_absolute():
            out[key] = {**section, "config": {**section["config"], "base_dir": str(home / base)}}
    return out


def project_instance():
    """The Dagster instance `make dev` shows (``ensure_dagster_home``), whatever the working directory."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    home = ensure_dagster_home()
    if not home.is_dir():
        raise CliError(f"DAGSTER_HOME={home} is not a folder; create it or unset DAGSTER_HOME", code=1)
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides=_rebased_storage(home)))


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


def _one_line(exc: BaseException) -> str:
    """An exception as one line: pydantic's multi-line validation errors become ``field: reason; ...``."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            return "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())) or 'value'}: {e.get('msg', '')}"
                             for e in errors())
        except Exception:  # not pydantic after all
            pass
    return " ".join(str(exc).split()) or type(exc).__name__


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
    if not path.exists() and not has_warehouse(home):  # never create a fresh home by accident
        raise CliError(no_warehouse_message(home), code=1)
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


def cmd_sim_serve(args) -> int:
    from collectors.simulator.server import serve_forever

    serve_forever(port=args.port, host=args.host, answer_key=Path(args.answer_key) if args.answer_key else None,
                  time_scale=args.time_scale, seed=args.seed, include_held_out=args.include_held_out)
    return 0


def cmd_local_serve(args) -> int:
    from collectors.local.server import serve_forever
    from warehouse.store import lrouter_home

    root = Path(args.capture_dir) if args.capture_dir else lrouter_home() / "warehouse" / "features" / "hidden_states"
    serve_forever(port=args.port, host=args.host, capture_root=None if args.no_capture else root)
    return 0


def check_route_request(image: str, question: str) -> None:
    """Refuse a mistyped path, a file that is no image or an empty question before the router loads (seconds)."""
    from PIL import Image

    if not question.strip():
        raise CliError("the question is empty; pass --question \"What does the sign say?\"")
    path = Path(image)
    if not path.is_file():
        raise CliError(f"no image file at {path}" + (" (it is a folder)" if path.is_dir() else "")
                       + "; check --image")
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:
        raise CliError(f"{path} is not an image PIL can read ({type(exc).__name__}); pass a PNG or JPEG "
                       "with --image") from exc


def cmd_route(args) -> int:
    from router.serving.service import load_router

    check_route_request(args.image, args.question)
    home = _warehouse(args)[1]
    require_warehouse(home)
    pool = [p for p in args.pool.split(",") if p] if args.pool else None
    try:
        router = load_router(home=home)
        ranked = router.route(args.image, args.question, pool=pool, lam=args.lam)
    except (FileNotFoundError, ValueError) as exc:  # no trained router yet, unknown pool model, bad image
        raise CliError(_one_line(exc).removeprefix("[Errno 2] "), code=1) from exc
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


def cmd_gateway(args) -> int:
    """The OpenAI-compatible gateway; sim models are served by an embedded simulator on loopback."""
    from contextlib import ExitStack

    from router.serving.gateway.app import make_gateway_app, make_gateway_server
    from router.serving.gateway.config import GatewayConfig, upstreams_from_models
    from router.serving.limits import limits_from_args, run_server
    from router.serving.service import load_router

    try:
        limits = limits_from_args(args)
        cfg = GatewayConfig(default_lambda=args.lam, max_fallbacks=args.max_fallbacks,
                            first_byte_timeout_s=args.upstream_timeout, log_prompts=args.log_prompts)
    except ValueError as exc:
        print(f"lrouter gateway: {exc}", file=sys.stderr)
        return 2
    wh, home = _warehouse(args)
    service = load_router(home=home)
    service.warm_up()
    with ExitStack() as stack:
        sim_url = None
        models = service.inputs.models
        if args.embedded_sim and any(r["backend"] == "sim" and not r["endpoint"] for r in models.iter_rows(named=True)):
            from collectors.simulator.server import SimServer
            from collectors.simulator.specs import ALL_MODELS

            key = wh.table_path("queries") if wh.has_table("queries") else None
            sim = stack.enter_context(SimServer(answer_key=key, models=list(ALL_MODELS.values()),
                                                time_scale=args.sim_time_scale))
            sim_url = sim.url
        app = make_gateway_app(service, lambda m: upstreams_from_models(m, sim_url), home=home, cfg=cfg,
                               limits=limits)
        server = make_gateway_server(app, host=args.host, port=args.port, limits=limits)

        def started(port: int) -> None:
            state = app.state.gateway
            print(f"OpenAI-compatible gateway on http://{args.host}:{port}/v1 (model: lrouter, lrouter:<lambda>, "
                  f"{', '.join(sorted(state.policies.policies()))} or a model id); routable: "
                  f"{', '.join(state.routable())}{'; sim models via the embedded simulator' if sim_url else ''}",
                  flush=True)

        try:
            run_server(server, started)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_calibrate(args) -> int:
    from router.serving.gateway.calibrate import calibrate_policy
    from router.serving.gateway.policies import POLICY_FILE, save_policy
    from router.serving.service import load_router

    home = _warehouse(args)[1]
    models = [m for m in args.models.split(",") if m] if args.models else None
    try:
        service = load_router(home=home)
        name = args.name or (f"budget-{args.target_cost_usd:g}" if args.target_cost_usd is not None
                             else f"strong-share-{args.target_strong_share:g}")
        policy = calibrate_policy(service, name, args.target_cost_usd, args.target_strong_share, models)
        save_policy(home / POLICY_FILE, policy)
    except (ValueError, FileNotFoundError) as exc:
        print(f"lrouter calibrate: {exc}", file=sys.stderr)
        return 2
    c = policy.calibration
    print(f"policy {policy.name!r}: lambda {policy.lam:.4g} on {c['n_val']} validation queries, "
          f"{len(policy.models or service.data.model_ids)} models")
    print(f"  expected cost {c['expected_cost_usd']:.3e} USD/request (target {c['target_cost_usd']}; at lambda 0: "
          f"{c['at_lambda_0']['expected_cost_usd']:.3e})")
    real = c["realised_val_quality"]
    print(f"  expected quality {c['expected_quality']:.3f} (validation traces of the picks: "
          f"{'n/a' if real is None else f'{real:.3f}'}; at lambda 0: {c['at_lambda_0']['expected_quality']:.3f})")
    print(f"  share sent to the strongest model {c['strongest_model']}: {c['strong_share']:.1%}")
    print(f"  stored in {home / POLICY_FILE}; use it as model={policy.name!r}")
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
    with project_instance() as instance:
        return print_lineage(args.table, wh, home, instance=instance)


def cmd_run(args) -> int:
    """Launch stages as named jobs in-process on the project's Dagster instance."""
    import os

    from pipelines.runner import RunOptions, StageFailed, run_stage

    home = _warehouse(args)[1]
    os.environ["LROUTER_HOME"] = str(home)  # the runs' WarehouseResource reads it
    if args.stage not in ("setup", "all") and not has_warehouse(home):
        raise CliError(f"{no_warehouse_message(home)} (or start with `lrouter run setup`)", code=1)
    if args.queries is not None and args.queries < 1:
        raise CliError(f"--queries must be at least 1, not {args.queries}")
    opts = RunOptions(n_queries=args.queries, seed=args.seed, models=tuple(args.model), preset=args.preset)
    with project_instance() as instance:
        try:
            run_stage(args.stage, instance, opts, log=lambda line: print(line, flush=True))
        except (StageFailed, ValueError) as exc:
            raise CliError(_one_line(exc), code=1) from exc
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless its help already states it (or there is nothing worth showing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if "default" in text or d is None or d is False or d is argparse.SUPPRESS or d in ("", []):
            return text
        return super()._get_help_string(action)


class LrouterParser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage block is one ``--help`` away) and defaults in the help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


HOME_HELP = "the lrouter home holding warehouse/ and models.yaml (default: $LROUTER_HOME, else ./data)"
EPILOG = ("Start with `make demo` (builds ./data), then `make dev` for the UI. Every subcommand takes --home; "
          "`lrouter COMMAND --help` lists its options.")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lrouter")
    except PackageNotFoundError:  # run from a checkout without `pip install -e .`
        return "unknown (not installed)"


def _add_home(parser: argparse.ArgumentParser) -> None:
    """``--home`` after the subcommand too (``lrouter route --home X``); SUPPRESS keeps a top-level one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_home(child)
    if "--home" not in parser._option_string_actions:
        parser.add_argument("--home", default=argparse.SUPPRESS, help=HOME_HELP)


def build_parser() -> argparse.ArgumentParser:
    p = LrouterParser(prog="lrouter", description="Multimodal outcome traces -> LatentRouter: collect traces, "
                      "train and evaluate routers, route requests.", epilog=EPILOG)
    p.add_argument("--home", default=None, help=HOME_HELP)
    p.add_argument("--version", action="version", version=f"lrouter {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    q = sub.add_parser("query", help="read-only SQL over the warehouse views (DuckDB)")
    q.add_argument("sql")
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    q.add_argument("--max-rows", type=int, default=10_000, metavar="N",
                   help="stop after N rows (default 10,000; 0: no cap)")
    q.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="interrupt after SECONDS (default 300; 0: none)")
    q.set_defaults(func=cmd_query)

    m = sub.add_parser("models", help="manage the candidate model registry")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    add = msub.add_parser("add", help="register a model (or re-enable a disabled one)")
    add.add_argument("name", help="model id as the server names it, e.g. llama3.2-vision:11b")
    add.add_argument("--backend", default="ollama", choices=["ollama", "sim"],
                     help="ollama: a real server; sim: a model of the built-in simulator")
    add.add_argument("--endpoint", default="", help="server URL (default: $OLLAMA_HOST / embedded simulator)")
    add.add_argument("--api-key-env", default="",
                     help="environment variable holding this model's bearer token (default: none for an own "
                          "--endpoint; $OLLAMA_API_KEY for models on the default host)")
    add.add_argument("--price-in", type=float, default=0.0, help="USD per million input tokens")
    add.add_argument("--price-out", type=float, default=0.0, help="USD per million output tokens")
    add.add_argument("--params-b", type=float, default=None, help="parameters in billions")
    add.add_argument("--description", default="", help="free text shown in the models table")
    add.add_argument("--no-check", action="store_true", help="skip the endpoint reachability check")
    msub.add_parser("list", help="list registered models")
    dis = msub.add_parser("disable", help="mask a model out of collection and routing")
    dis.add_argument("name", help="model id (see `lrouter models list`)")
    m.set_defaults(func=cmd_models)

    r = sub.add_parser("route", help="rank the candidate models for one image+question")
    r.add_argument("--image", required=True, help="PNG or JPEG file of the request")
    r.add_argument("--question", required=True, help="the question asked about the image")
    r.add_argument("--lambda", dest="lam", type=float, default=0.0, metavar="LAMBDA",
                   help="cost weight: utility = quality - lambda x normalised cost (0: best quality)")
    r.add_argument("--pool", default="", help="comma-separated subset of the active models (default: all)")
    r.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    r.set_defaults(func=cmd_route)

    sv = sub.add_parser("serve", help="answer routing requests over HTTP (POST /route, GET /health)")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    sv.add_argument("--port", type=int, default=8787)
    from router.serving.limits import add_limit_arguments

    add_limit_arguments(sv)  # --max-body-bytes, --max-question-chars, --max-image-pixels, --request-timeout, ...
    sv.set_defaults(func=cmd_serve)

    gw = sub.add_parser("gateway", help="OpenAI-compatible endpoint: route, forward, fall back (POST /v1/chat/completions)")
    gw.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    gw.add_argument("--port", type=int, default=8788)
    gw.add_argument("--lambda", dest="lam", type=float, default=0.1, help="cost weight of model=lrouter")
    gw.add_argument("--max-fallbacks", type=int, default=2, help="next-ranked models tried after a failure")
    gw.add_argument("--upstream-timeout", type=float, default=30.0, metavar="S",
                    help="seconds to a whole answer / the first streamed event before falling back")
    gw.add_argument("--log-prompts", action="store_true", help="store question text in served_requests")
    gw.add_argument("--no-embedded-sim", dest="embedded_sim", action="store_false",
                    help="do not start the simulator for sim models without an endpoint")
    gw.add_argument("--sim-time-scale", type=float, default=0.01, help="fraction of simulated latency waited")
    add_limit_arguments(gw)
    gw.set_defaults(func=cmd_gateway)

    cal = sub.add_parser("calibrate", help="store a named gateway policy whose lambda meets a budget")
    cal.add_argument("--target-cost-usd", type=float, default=None, help="mean expected cost per request")
    cal.add_argument("--target-strong-share", type=float, default=None,
                     help="share of requests sent to the strongest model (0..1)")
    cal.add_argument("--models", default="", help="comma-separated pool (default: every active model)")
    cal.add_argument("--name", default="", help="policy name (default budget-<X> / strong-share-<S>)")
    cal.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("sim-serve", help="serve the simulated pool over Ollama's HTTP API")
    s.add_argument("--port", type=int, default=11434, help="TCP port (0: any free port)")
    s.add_argument("--host", default="127.0.0.1", help="bind address")
    s.add_argument("--answer-key", default="", help="queries Parquet (default: the warehouse queries table)")
    s.add_argument("--time-scale", type=float, default=1.0,
                   help="fraction of each reply's simulated latency actually waited")
    s.add_argument("--seed", type=int, default=0, help="seed of the simulated answers")
    s.add_argument("--include-held-out", action="store_true",
                   help="also serve the held-back model (simocr-pro:12b) of the walkthrough")
    s.set_defaults(func=cmd_sim_serve)

    ls = sub.add_parser("local-serve", help="serve the REAL local models (OCR + SmolLM2) over Ollama's HTTP API")
    ls.add_argument("--port", type=int, default=11435, help="TCP port (0: any free port)")
    ls.add_argument("--host", default="127.0.0.1", help="bind address")
    ls.add_argument("--capture-dir", default="", help="hidden-state store (default: "
                    "$LROUTER_HOME/warehouse/features/hidden_states)")
    ls.add_argument("--no-capture", action="store_true", help="do not store hidden states")
    ls.set_defaults(func=cmd_local_serve)

    i = sub.add_parser("import", help="import a routing benchmark or your own queries")
    i.add_argument("kind", choices=["mmr-bench", "vl-routerbench", "long", "queries"],
                   help="format of PATH (see the README's 'Bring your own data')")
    i.add_argument("path", help="the file or folder to import")
    i.add_argument("--images", default="", help="image folder")
    i.add_argument("--queries", default="", help="queries file (long format)")
    i.add_argument("--benchmark", default="", help="benchmark name to record")
    i.add_argument("--on-error", choices=["skip", "fail"], default="fail",
                   help="fail: any bad row refuses the import; skip: bad rows are listed and left out")
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
    lin.add_argument("table", help="warehouse table: queries, models, traces, features, splits, profiles, "
                     "router, eval_results or routing_decisions")
    lin.set_defaults(func=cmd_lineage)
    _add_home(p)
    return p


NEEDS_WAREHOUSE = ("query", "serve")  # route, lineage, models and run check it themselves


def main(argv: list[str] | None = None) -> int:
    """Dispatch; a failure the user can fix is one line on stderr and a non-zero exit, never a traceback."""
    import os

    args = build_parser().parse_args(argv)
    saved = os.environ.get("LROUTER_HOME")
    try:
        if getattr(args, "home", None):  # code reading $LROUTER_HOME (assets, runner) sees --home too
            os.environ["LROUTER_HOME"] = str(Path(args.home).resolve())
        if args.cmd in NEEDS_WAREHOUSE:
            require_warehouse(_warehouse(args)[1])
        if args.cmd == "sim-serve" and not args.answer_key:
            wh, _ = _warehouse(args)
            if wh.has_table("queries"):
                args.answer_key = str(wh.table_path("queries"))
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"lrouter {args.cmd}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"lrouter {args.cmd}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unforeseen failure: still one line, the traceback on request
        if os.environ.get("LROUTER_DEBUG"):
            raise
        print(f"lrouter {args.cmd}: {type(exc).__name__}: {_one_line(exc)} (LROUTER_DEBUG=1 shows the "
              "traceback)", file=sys.stderr)
        return 1
    finally:
        if saved is None:
            os.environ.pop("LROUTER_HOME", None)
        else:
            os.environ["LROUTER_HOME"] = saved


if __name__ == "__main__":
    sys.exit(main())
