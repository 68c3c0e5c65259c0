"""The argument parser and the dispatcher: every failure the user can fix is one line, never a traceback."""

from __future__ import annotations

import argparse
import sys

from pipelines.cli.common import CliError, _one_line, _warehouse, require_warehouse
from pipelines.cli.data import cmd_import, cmd_lineage, cmd_models, cmd_query, cmd_run
from pipelines.cli.serving import (
    cmd_calibrate,
    cmd_gateway,
    cmd_keys,
    cmd_local_serve,
    cmd_route,
    cmd_serve,
    cmd_sim_serve,
)


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

    argv: list[str] = []  # the command line being parsed (set by main), to name a mistyped flag

    def error(self, message: str) -> None:  # type: ignore[override]
        """One line; a mistyped flag is named (with the nearest known one) before any missing-argument
        complaint it caused: ``--img`` is reported as unknown, not as a missing ``--image``."""
        import difflib

        known = set(self._option_string_actions)
        typos = [a.split("=", 1)[0] for a in self.argv if a.startswith("--") and a.split("=", 1)[0] not in known]
        if typos and self.prog != "lrouter":
            near = difflib.get_close_matches(typos[0], sorted(known), n=1)
            message = f"unrecognized argument {typos[0]}" + (f" (did you mean {near[0]}?)" if near else "")
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
    _add_data_commands(sub)
    _add_serving_commands(sub)
    _add_home(p)
    return p


def _add_data_commands(sub) -> None:
    """Subcommands over the warehouse and the pipeline: query, models, import, run, lineage."""
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
    add.add_argument("--backend", default="ollama",  # checked by the registry, which names the valid ones
                     help="ollama: a real Ollama server; openai: any OpenAI-compatible server (OpenAI, vLLM, "
                          "llama.cpp, ...); sim: a model of the built-in simulator")
    add.add_argument("--endpoint", default="", help="server URL (default: $OLLAMA_HOST / embedded simulator); "
                     "openai: the base URL, e.g. http://127.0.0.1:8000/v1")
    add.add_argument("--api-key-env", default="",
                     help="NAME of the environment variable holding this model's key (default: none for an own "
                          "--endpoint; $OLLAMA_API_KEY for models on the default host); the key itself is "
                          "never written anywhere")
    add.add_argument("--server-model", default="", help="the model's name at the server, if it differs from NAME")
    add.add_argument("--price-in", type=float, default=0.0, help="USD per million input tokens")
    add.add_argument("--price-out", type=float, default=0.0, help="USD per million output tokens")
    add.add_argument("--price-per-image", type=float, default=None, help="USD per image sent, if billed per image")
    add.add_argument("--max-concurrency", type=int, default=None,
                     help="calls in flight to this model (default: the collection's setting)")
    add.add_argument("--rpm", type=float, default=None, help="requests per minute allowed to this model")
    add.add_argument("--params-b", type=float, default=None, help="parameters in billions")
    add.add_argument("--description", default="", help="free text shown in the models table")
    add.add_argument("--no-check", action="store_true", help="skip the endpoint reachability check")
    msub.add_parser("list", help="list registered models")
    dis = msub.add_parser("disable", help="mask a model out of collection and routing")
    dis.add_argument("name", help="model id (see `lrouter models list`)")
    m.set_defaults(func=cmd_models)

    i = sub.add_parser("import", help="import a routing benchmark or your own queries")
    i.add_argument("format", choices=["mmr-bench", "vl-routerbench", "long", "queries"],
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


def _add_serving_commands(sub) -> None:
    """Subcommands that serve: route, serve, gateway, calibrate, sim-serve, local-serve."""
    r = sub.add_parser("route", help="rank the candidate models for one image+question")
    r.add_argument("--image", required=True, help="PNG or JPEG file of the request")
    r.add_argument("--question", required=True, help="the question asked about the image")
    r.add_argument("--lambda", dest="lam", type=float, default=None, metavar="LAMBDA",
                   help="cost weight >= 0: utility = quality - lambda x normalised cost (0: best quality; "
                        "default: the deployed router's lambda)")
    r.add_argument("--pool", default="", help="comma-separated subset of the active models (default: all)")
    r.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    r.set_defaults(func=cmd_route)

    sv = sub.add_parser("serve", help="answer routing requests over HTTP (POST /route, GET /health)")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    sv.add_argument("--port", type=int, default=8787)
    from router.serving.limits import add_limit_arguments

    add_limit_arguments(sv)  # --max-body-bytes, --max-question-chars, --max-image-pixels, --request-timeout, ...
    _add_auth(sv)
    sv.set_defaults(func=cmd_serve)

    gw = sub.add_parser("gateway", help="OpenAI-compatible endpoint: route, forward, fall back (POST /v1/chat/completions)")
    gw.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    gw.add_argument("--port", type=int, default=8788)
    gw.add_argument("--lambda", dest="lam", type=float, default=None,
                    help="cost weight of model=lrouter (default: the deployed router's lambda)")
    gw.add_argument("--max-fallbacks", type=int, default=2, help="next-ranked models tried after a failure")
    gw.add_argument("--upstream-timeout", type=float, default=30.0, metavar="S",
                    help="seconds to a whole answer / the first streamed event before falling back")
    gw.add_argument("--log-prompts", action="store_true", help="store question text in served_requests")
    gw.add_argument("--no-embedded-sim", dest="embedded_sim", action="store_false",
                    help="do not start the simulator for sim models without an endpoint")
    gw.add_argument("--sim-time-scale", type=float, default=0.01, help="fraction of simulated latency waited")
    gw.add_argument("--max-upstream-bytes", type=int, default=32 * 1024 * 1024, metavar="N",
                    help="largest upstream answer (or stream) read; larger: 502")
    add_limit_arguments(gw)
    _add_auth(gw)
    gw.set_defaults(func=cmd_gateway)

    keys = sub.add_parser("keys", help="access keys for serve / gateway (stored hashed in the home)")
    ksub = keys.add_subparsers(dest="keys_cmd", required=True, metavar="ACTION")
    kadd = ksub.add_parser("add", help="create a key (printed once, stored only as a hash)")
    kadd.add_argument("name", help="a label for the key, e.g. team-search")
    kadd.add_argument("--rpm", type=int, default=None, help="requests per minute (default: unlimited)")
    kadd.add_argument("--budget-usd-per-day", type=float, default=None, metavar="USD",
                      help="recorded cost per UTC day before 429 (default: unlimited)")
    ksub.add_parser("list", help="list keys (ids, names, limits; never the keys)")
    krev = ksub.add_parser("revoke", help="revoke a key by id or name (a running server stops accepting it)")
    krev.add_argument("key", help="key id (key_...) or name")
    keys.set_defaults(func=cmd_keys)

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


def _add_auth(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--auth", choices=["auto", "required", "off"], default="auto",
                        help="access keys (lrouter keys add): auto = required unless --host is loopback; off is "
                             "refused for a non-loopback --host")


NEEDS_WAREHOUSE = ("query", "serve")  # route, lineage, models and run check it themselves


def main(argv: list[str] | None = None) -> int:
    """Dispatch; a failure the user can fix is one line on stderr and a non-zero exit, never a traceback."""
    from pipelines.settings import Settings

    LrouterParser.argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    settings = Settings.from_env().with_home(getattr(args, "home", None))
    args.home = str(settings.home)  # every command works on this one home, passed on as an argument
    args.settings = settings
    try:
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
        if settings.debug:
            raise
        print(f"lrouter {args.cmd}: {type(exc).__name__}: {_one_line(exc)} (LROUTER_DEBUG=1 shows the "
              "traceback)", file=sys.stderr)
        return 1
