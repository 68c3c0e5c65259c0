"""What the Dagster UI shows a newcomer: the evaluation report's plots and main table on its latest
materialization, typed tables with rounded numbers, a description on every check.

The browser test starts ``dagster-webserver`` on loopback on a small materialized warehouse and drives
Debian's chromium (``apt-get install chromium``) headless through Playwright (``pip install playwright``; no
browser download: ``executable_path`` is the system chromium). It skips, saying which, when either is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from assets.figures import INLINE_LIMIT
from tests.conftest import TINY_ROUTER

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
EVAL_CONFIG = {"preset": "quick", "seeds": [0, 1], "experiments": ["main_table", "frontier", "task_groups"]}


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    return None


@pytest.fixture(scope="module")
def ui_instance(tmp_path_factory, tiny_template):
    """(home, dagster_home, instance): the graph through evaluation_report on a persistent instance that keeps
    its compute logs (the plots' files): a copy of the tiny pipeline, its router trained again here."""
    from dagster._core.instance.ref import InstanceRef

    from pipelines.definitions import defs, materialize
    from tests.conftest import copy_tiny_pipeline

    root = tmp_path_factory.mktemp("ui")
    home, template_instance = copy_tiny_pipeline(tiny_template, root)
    template_instance.dispose()
    dh = root / "instance"  # the template's runs under dagster_home/{history,storage}
    (dh / ".nux").mkdir(parents=True)
    (dh / ".nux" / "nux.yaml").write_text("seen: 1\n")  # no "Join the Dagster community" dialog over the page
    (dh / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # local compute logs: the plots' files
    mp = pytest.MonkeyPatch()
    mp.setenv("LROUTER_HOME", str(home))
    mp.delenv("LROUTER_REGISTRY", raising=False)
    mp.delenv("OLLAMA_HOST", raising=False)
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(dh)))

    def mat(names: list[str], **kw) -> None:
        assert materialize(names, instance=instance, resources=defs.resources, **kw).success, names

    # the tiny pipeline's instance kept no compute logs: train its router again so the curve is a file here
    mat(["latent_router", "deployed_router"],
        run_config={"ops": {"latent_router": {"config": TINY_ROUTER},
                            "deployed_router": {"config": {"preset": "quick",
                                                           "deploy_candidates": ["Strongest", "GroupBest"]}}}})
    mat(["evaluation_report"], run_config={"ops": {"evaluation_report": {"config": EVAL_CONFIG}}})
    yield home, dh, instance
    instance.dispose()
    mp.undo()


def _latest(instance: dg.DagsterInstance, asset: str) -> dict:
    rec = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0]
    return rec.asset_materialization.metadata


def test_every_asset_check_has_a_description() -> None:
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = list(graph.asset_check_keys)
    assert keys
    assert [k.to_user_string() for k in keys if not (graph.get_check_spec(k).description or "").strip()] == []


def test_tables_are_typed_with_rounded_numbers_and_plots_are_embedded(ui_instance) -> None:
    _, _, instance = ui_instance
    for asset in ("candidate_models", "warehouse_views", "data_splits", "capability_profiles", "latent_router",
                  "evaluation_report"):
        for key, value in _latest(instance, asset).items():
            if isinstance(value, dg.TableMetadataValue):
                for record in value.records:
                    for cell in record.data.values():
                        if isinstance(cell, float) and cell == cell:
                            assert float(f"{cell:.4g}") == cell, (asset, key, cell)
    report = _latest(instance, "evaluation_report")
    assert isinstance(report["main_table"], dg.TableMetadataValue)
    assert report["main_table"].records[0].data["Router"] == "Oracle"
    assert not any("*" in str(v) for r in report["main_table"].records for v in r.data.values())
    # plots are files next to the run's compute logs, linked by Markdown short enough for the UI to show in place
    plots = report["plots"].value
    assert len(plots) < INLINE_LIMIT and "data:" not in plots
    assert plots.startswith("**model comparison**") and plots.count("](/logs/") >= 3  # + frontier, task groups
    router = _latest(instance, "latent_router")
    curve = router["training_curve_plot"].value
    assert len(curve) < INLINE_LIMIT and "](/logs/" in curve
    assert isinstance(router["training_curve"], dg.TableMetadataValue)
    built = _latest(instance, "capability_profiles")["built_from"].value
    assert "calibration" in built and "{" not in built  # a short list, not the stored JSON


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(ui_instance):
    """The UI on loopback over the materialized instance; its URL."""
    why = browser_missing()
    if why:
        pytest.skip(why)
    home, dh, _ = ui_instance
    port = _free_port()
    exe = shutil.which("dagster-webserver", path=str(Path(sys.executable).parent)) or "dagster-webserver"
    env = {**os.environ, "DAGSTER_HOME": str(dh), "LROUTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1"}
    log = (dh / "webserver.log").open("w")
    proc = subprocess.Popen([exe, "-m", "pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)], cwd=dh,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (dh / "webserver.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("dagster-webserver did not answer in 90 s:\n" + (dh / "webserver.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_evaluation_report_shows_its_main_table_and_plots_in_the_browser(webserver: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)  # expect() has its own 5 s default; CI boxes are slow
            page.goto(f"{webserver}/assets/evaluation_report", wait_until="domcontentloaded")
            # the latest materialization's metadata: the main table is a real table, its first row the Oracle
            main = page.locator("tr", has=page.locator("td", has_text="main_table")).first
            expect(main).to_be_visible()
            expect(main.locator("table").first).to_contain_text("Oracle")
            expect(main.locator("table").first).to_contain_text("LatentRouter")
            expect(main).to_contain_text("Accuracy (λ=0)")
            # the one deployment decision: the report's headline names it, and its own asset says why
            deployed = _deployed_name(webserver)
            headline = page.locator("tr", has=page.locator("td", has_text="headline")).first
            headline.get_by_text("[Show Markdown]").click()
            expect(page.get_by_text(f"Deployed: {deployed}").first).to_be_visible()
            page.keyboard.press("Escape")
            page.goto(f"{webserver}/assets/deployed_router", wait_until="domcontentloaded")
            reason = page.locator("tr", has=page.locator("td", has_text="reason")).first
            expect(reason).to_contain_text(f"{deployed} has the best validation utility")
        finally:
            browser.close()


def _shown_images(page, row_label: str, shot: Path) -> list[int]:
    """naturalWidth of every image in the metadata row ``row_label`` of the open asset page, as rendered
    without a click (the page's screenshot saved to ``shot``)."""
    from playwright.sync_api import expect

    row = page.locator("tr").filter(has=page.locator("td", has_text=re.compile(rf"^{row_label}$"))).first
    expect(row.locator("img").first).to_be_visible()
    page.wait_for_function("([label]) => [...document.querySelectorAll('tr')].some(tr => {"
                           " const key = tr.querySelector('td'); const imgs = [...tr.querySelectorAll('img')];"
                           " return key && key.innerText.trim() === label && imgs.length > 0"
                           " && imgs.every(i => i.complete && i.naturalWidth > 0); })", arg=[row_label])
    row.locator("img").first.scroll_into_view_if_needed()
    page.screenshot(path=str(shot))
    return row.locator("img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")


def test_main_plots_show_on_the_asset_pages_without_a_click(webserver: str, ui_instance) -> None:
    """The report's plots (model comparison first, the frontier next) and LatentRouter's training curve are
    images on the asset pages themselves, not behind "[Show Markdown]"."""
    from playwright.sync_api import sync_playwright

    _, dh, _ = ui_instance
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.set_default_timeout(60_000)
            page.goto(f"{webserver}/assets/evaluation_report", wait_until="domcontentloaded")
            widths = _shown_images(page, "plots", dh / "evaluation_report_plots.png")
            assert len(widths) >= 3 and min(widths) > 100, widths  # model comparison, frontier, task groups
            alts = page.locator("img[src^='/logs/']").evaluate_all("imgs => imgs.map(i => i.alt)")
            assert alts[:2] == ["model comparison", "frontier"], alts
            page.goto(f"{webserver}/assets/latent_router", wait_until="domcontentloaded")
            widths = _shown_images(page, "training_curve_plot", dh / "latent_router_curve.png")
            assert widths and widths[0] > 100
        finally:
            browser.close()


def _deployed_name(webserver: str) -> str:
    """The deployed router as /health-style readers see it: deployed.json of the published checkpoint."""
    from router.evaluation.deploy import read_deployment
    from router.training.artifacts import latest_checkpoint_dir
    from warehouse.store import Warehouse, lrouter_home

    return read_deployment(latest_checkpoint_dir(Warehouse(lrouter_home() / "warehouse")))["deployed"]
