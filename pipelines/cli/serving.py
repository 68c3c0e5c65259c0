"""Subcommands that serve: route one request, the decision server, the gateway, calibration, the
simulated and local model servers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipelines.cli.common import CliError, _one_line, _warehouse, require_warehouse


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


def _serving(args):
    """The serving options the environment gave this process (read once, in pipelines.settings)."""
    from pipelines.settings import Settings

    return (getattr(args, "settings", None) or Settings.from_env()).serving()


def cmd_route(args) -> int:
    import math

    from router.serving.service import load_router

    check_route_request(args.image, args.question)
    if args.lam is not None and not (math.isfinite(args.lam) and args.lam >= 0):
        raise CliError(f"--lambda must be a finite number >= 0, got {args.lam}")
    home = _warehouse(args)[1]
    require_warehouse(home)
    pool = [p for p in args.pool.split(",") if p] if args.pool else None
    try:
        router = load_router(home=home, serving=_serving(args))
        dep = router.deployment
        lam = float(args.lam if args.lam is not None else (dep.get("lambda") or 0.0))
        ranked = router.route(args.image, args.question, pool=pool, lam=lam)
    except (FileNotFoundError, ValueError) as exc:  # no trained router yet, unknown pool model, bad image
        raise CliError(_one_line(exc).removeprefix("[Errno 2] "), code=1) from exc
    simulated = {m for m, s in zip(router.data.model_ids, router.data.simulated or [], strict=False) if s}
    if args.format == "json":
        print(json.dumps({"router": dep["serving"], "deployed": dep["deployed"], "lambda": lam,
                          "checkpoint": router.checkpoint.name,
                          "ranked": [{**r, "simulated": r["model_id"] in simulated} for r in ranked]}, indent=2))
        return 0
    print(f"router: {dep['serving']} (deployed: {dep['deployed']}), lambda {lam:g}, checkpoint "
          f"{router.checkpoint.name}" + (f"; {dep['note']}" if dep.get("note") else ""))
    sigma = any(r["uncertainty"] > 0 for r in ranked)  # a baseline has no uncertainty to show
    print(f"{'rank':<5}{'model':<30}{'quality':>9}" + (f"{'sigma':>8}" if sigma else "")
          + f"{'cost_usd':>12}{'utility':>9}")
    for i, r in enumerate(ranked, 1):
        name = r["model_id"] + (" *" if r["model_id"] in simulated else "")
        print(f"{i:<5}{name:<30}{r['quality']:>9.3f}" + (f"{r['uncertainty']:>8.3f}" if sigma else "")
              + f"{r['cost_usd']:>12.2e}{r['utility']:>9.3f}")
    if simulated & {r["model_id"] for r in ranked}:
        print("* simulated model (the built-in simulator, not a real MLLM)")
    return 0


def _access(args, home: Path):
    """The server's access gate from --auth and --host (keys from <home>/keys.json); refuses to start a
    server that needs keys when none is active."""
    from router.serving.keys import auth_required, open_gate

    required = auth_required(args.auth, args.host)
    spent = None
    if args.cmd == "gateway":
        from router.serving.gateway.served_log import spend_by_key

        def spent(day: str) -> dict[str, float]:
            return spend_by_key(home / "warehouse", day)
    gate = open_gate(home, required, spent)
    gate.check_startable()
    return gate


def _auth_note(gate) -> str:
    if not gate.required:
        return "access: open (loopback)"
    n = sum(k.active for k in gate.store.keys())
    return f"access: {n} active key(s) from {gate.store.path}"


def cmd_serve(args) -> int:
    from router.serving.http import make_server
    from router.serving.keys import KeyError_
    from router.serving.limits import limits_from_args, run_server
    from router.serving.service import load_router

    home = _warehouse(args)[1]
    try:
        limits = limits_from_args(args)  # checked before the (slow) service build
        gate = _access(args, home)
    except (ValueError, KeyError_) as exc:
        print(f"lrouter serve: {exc}", file=sys.stderr)
        return 2
    service = load_router(home=home, serving=_serving(args))
    service.warm_up()  # load the encoders now, not on the first request
    server = make_server(service, host=args.host, port=args.port, limits=limits, access=gate)

    def started(port: int) -> None:
        print(f"routing on http://{args.host}:{port}  (POST /route, GET /health); checkpoint "
              f"{service.checkpoint.name}; models: {', '.join(service.data.model_ids)}; {_auth_note(gate)}",
              flush=True)

    try:
        run_server(server, started)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_gateway(args) -> int:
    """The OpenAI-compatible gateway; sim models are served by an embedded simulator on loopback."""
    from contextlib import ExitStack
    from dataclasses import replace

    from router.serving.gateway.app import make_gateway_app, make_gateway_server
    from router.serving.gateway.config import GatewayConfig, upstreams_from_models
    from router.serving.keys import KeyError_, auth_required
    from router.serving.limits import limits_from_args, run_server
    from router.serving.service import load_router

    wh, home = _warehouse(args)
    try:
        limits = limits_from_args(args)
        cfg = GatewayConfig(default_lambda=args.lam if args.lam is not None else 0.1, max_fallbacks=args.max_fallbacks,
                            first_byte_timeout_s=args.upstream_timeout, log_prompts=args.log_prompts,
                            max_upstream_bytes=args.max_upstream_bytes)
        gate = _access(args, home)  # checked here, before the (slow) router build
    except (ValueError, KeyError_) as exc:
        print(f"lrouter gateway: {exc}", file=sys.stderr)
        return 2
    service = load_router(home=home, serving=_serving(args))
    if args.lam is None and service.deployment.get("lambda") is not None:  # the one deployment decision's
        cfg = replace(cfg, default_lambda=float(service.deployment["lambda"]))
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
                               limits=limits, auth_required=auth_required(args.auth, args.host))
        server = make_gateway_server(app, host=args.host, port=args.port, limits=limits)

        def started(port: int) -> None:
            state = app.state.gateway
            print(f"OpenAI-compatible gateway on http://{args.host}:{port}/v1 (model: lrouter, lrouter:<lambda>, "
                  f"{', '.join(sorted(state.policies.policies()))} or a model id); routable: "
                  f"{', '.join(state.routable())}{'; sim models via the embedded simulator' if sim_url else ''}; "
                  f"{_auth_note(gate)}", flush=True)

        try:
            run_server(server, started)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_keys(args) -> int:
    """``lrouter keys add|list|revoke``: the key is printed once by ``add``; the home keeps only its hash."""
    from router.serving.keys import KeyError_, KeyStore

    store = KeyStore.in_home(_warehouse(args)[1])
    try:
        if args.keys_cmd == "add":
            rec, secret = store.add(args.name, args.rpm, args.budget_usd_per_day)
            print(secret)
            print(f"key {rec.id} ({rec.name}): rpm {rec.rpm or 'unlimited'}, budget "
                  f"{'unlimited' if rec.budget_usd_per_day is None else f'{rec.budget_usd_per_day:g} USD/day'}; "
                  f"shown once, stored hashed in {store.path}", file=sys.stderr)
        elif args.keys_cmd == "revoke":
            rec = store.revoke(args.key)
            print(f"revoked {rec.id} ({rec.name}) at {rec.revoked_at}")
        else:
            keys = store.keys()
            if store.load_error:
                raise KeyError_(store.load_error)
            print(f"{'id':<14}{'name':<24}{'hint':<12}{'rpm':>6}{'usd/day':>10}  {'created':<26}status")
            for k in keys:
                print(f"{k.id:<14}{k.name[:23]:<24}{k.hint:<12}{k.rpm or '-':>6}"
                      f"{'-' if k.budget_usd_per_day is None else f'{k.budget_usd_per_day:g}':>10}  "
                      f"{k.created_at:<26}{'active' if k.active else 'revoked ' + str(k.revoked_at)}")
    except KeyError_ as exc:
        raise CliError(str(exc), code=2) from exc
    return 0


def cmd_calibrate(args) -> int:
    from router.serving.gateway.calibrate import calibrate_policy
    from router.serving.gateway.policies import POLICY_FILE, save_policy
    from router.serving.service import load_router

    home = _warehouse(args)[1]
    models = [m for m in args.models.split(",") if m] if args.models else None
    try:
        service = load_router(home=home, serving=_serving(args))
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
