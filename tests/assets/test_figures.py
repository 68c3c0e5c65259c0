"""Plots as metadata the UI shows in place: short Markdown linking PNG files next to the run's compute logs,
data URIs where the instance keeps no local compute logs. (The browser test in tests/e2e/test_ui.py checks
that the webserver serves them and the asset page shows them without a click.)"""

from __future__ import annotations

import io
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from assets.figures import INLINE_LIMIT, figures_markdown


def _png(width: int = 1200, height: int = 600) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def instance(tmp_path: Path):
    from dagster._core.instance.ref import InstanceRef

    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as inst:
        yield inst


def test_plots_are_linked_files_short_enough_to_render_in_place(instance, tmp_path: Path) -> None:
    names = ["model_comparison", "frontier", "task_groups", "ablations", "sensitivity", "pool_changes",
             "cold_start", "efficiency"]
    images = {n: _png(1200 + i) for i, n in enumerate(names)}
    run_id = "0f0e0d0c-0b0a-0908-0706-050403020100"
    md = figures_markdown(images, run=(instance, run_id)).value
    assert len(md) < INLINE_LIMIT and "data:" not in md
    urls = [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert len(urls) == len(names) and md.index("model comparison") < md.index("frontier")
    for url in urls:  # /logs/<run>/figures/<stem>/png is the file <compute logs>/<run>/figures/<stem>.png
        _, logs, run, folder, stem, ext = url.split("/")
        assert (logs, run, folder, ext) == ("logs", run_id, "figures", "png")
        path = Path(instance.compute_log_manager.get_captured_local_path([run, folder, stem], ext))
        assert tmp_path in path.parents
        with Image.open(path) as img:
            assert img.width == 700  # scaled down to fit the page
    assert figures_markdown(images, run=(instance, run_id)).value == md  # same plots, same files


def test_without_local_compute_logs_plots_are_embedded() -> None:
    with dg.DagsterInstance.ephemeral() as inst:
        md = figures_markdown({"curve": _png(300, 200)}, run=(inst, "r1")).value
    assert md.startswith("**curve**") and "](data:image/png;base64," in md
    assert figures_markdown({}).value == "_(no plots)_"


def test_an_asset_links_its_plots_to_its_own_run(instance) -> None:
    @dg.asset
    def plotted() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"plots": figures_markdown({"curve": _png(400, 300)})})

    result = dg.materialize([plotted], instance=instance)
    md = result.asset_materializations_for_node("plotted")[0].metadata["plots"].value
    assert f"](/logs/{result.run_id}/figures/curve-" in md
