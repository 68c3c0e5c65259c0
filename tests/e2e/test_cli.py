"""The ``lrouter`` command line as a newcomer meets it: every mistake is one line on stderr naming the problem
and the fix, with a non-zero exit and no traceback, and nothing is created on the way.

Each case runs the console script as a subprocess from a folder that is not the repository (the way a
newcomer runs it from their home directory), on a home without a warehouse or on a small one with a
trained router (the shared ``tiny_pipeline``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NO_WAREHOUSE = "run `make demo`, pass --home or set LROUTER_HOME"


def lrouter(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the CLI the way the console script does (``python -m pipelines.cli``: same ``main``)."""
    base = {k: v for k, v in os.environ.items() if k not in ("LROUTER_HOME", "DAGSTER_HOME", "LROUTER_DEBUG")}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line(res: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit ``code``, one line on stderr holding every needle, no traceback."""
    err = res.stderr.strip()
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """An unrelated working directory with no ./data."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    return d


def test_version_and_help_list_every_command_with_defaults(elsewhere: Path) -> None:
    res = lrouter("--version", cwd=elsewhere)
    assert res.returncode == 0 and res.stdout.startswith("lrouter ")
    top = lrouter("--help", cwd=elsewhere).stdout
    for cmd in ("query", "models", "route", "serve", "sim-serve", "import", "run", "lineage"):
        assert cmd in top
    assert "make demo" in top and "--home" in top
    route = lrouter("route", "--help", cwd=elsewhere).stdout
    assert "default: the deployed router's lambda" in " ".join(route.split()) and "(default: table)" in route and "--home" in route
    sim = lrouter("sim-serve", "--help", cwd=elsewhere).stdout
    assert "(default: 11434)" in sim and "(default: 127.0.0.1)" in sim


def test_a_usage_error_is_one_line_pointing_at_help(elsewhere: Path) -> None:
    assert_one_line(lrouter("route", "--image", cwd=elsewhere), 2, "expected one argument",
                    "lrouter route --help")
    assert_one_line(lrouter("nosuch", cwd=elsewhere), 2, "invalid choice", "lrouter --help")
    # a mistyped flag is named, with the nearest known one, not reported as the argument it failed to give
    assert_one_line(lrouter("route", "--img", "x.png", "--question", "q", cwd=elsewhere), 2,
                    "unrecognized argument --img (did you mean --image?)")


@pytest.mark.parametrize("args", [
    ("models", "list"),
    ("models", "disable", "simvl-nano:1b"),
    ("query", "select count(*) from traces"),
    ("lineage", "traces"),
    ("run", "train"),
    ("route", "--image", "IMAGE", "--question", "What does the sign say?"),
])
def test_no_warehouse_is_named_and_nothing_is_created(args: tuple[str, ...], elsewhere: Path, tmp_path: Path) -> None:
    image = tmp_path / "sign.png"
    _png(image)
    args = tuple(str(image) if a == "IMAGE" else a for a in args)
    res = lrouter(*args, cwd=elsewhere)  # default home: ./data of the working directory
    assert_one_line(res, 1, f"no warehouse under {elsewhere / 'data'}", NO_WAREHOUSE)
    assert list(elsewhere.iterdir()) == []  # no ./data, no Dagster storage in the working directory


def test_home_flag_is_honoured_before_and_after_the_subcommand(elsewhere: Path, tmp_path: Path) -> None:
    missing = tmp_path / "typo-home"
    for args in (("--home", str(missing), "models", "list"), ("models", "list", "--home", str(missing))):
        assert_one_line(lrouter(*args, cwd=elsewhere), 1, f"no warehouse under {missing}", NO_WAREHOUSE)
    res = lrouter("models", "list", cwd=elsewhere, env={"LROUTER_HOME": str(missing)})
    assert_one_line(res, 1, f"no warehouse under {missing}")
    assert not missing.exists()


def test_lineage_names_an_unknown_table_and_a_missing_dagster_home(elsewhere: Path, tmp_path: Path) -> None:
    assert_one_line(lrouter("lineage", "nope", cwd=elsewhere), 2, "unknown table 'nope'", "traces")
    home = tmp_path / "home"
    (home / "warehouse" / "tables").mkdir(parents=True)
    _png(home / "placeholder.png")
    import polars as pl

    pl.DataFrame({"query_id": ["q1"]}).write_parquet(home / "warehouse" / "tables" / "queries.parquet")
    res = lrouter("--home", str(home), "lineage", "queries", cwd=elsewhere,
                  env={"DAGSTER_HOME": str(tmp_path / "no-such-dir")})
    assert_one_line(res, 1, "DAGSTER_HOME=", "is not a folder", "unset DAGSTER_HOME")


def test_lineage_without_dagster_home_reads_the_project_instance_from_any_folder(elsewhere: Path, tmp_path: Path) -> None:
    """`ensure_dagster_home` picks the repository's dagster.yaml, whose storage paths are relative: they are
    taken from the repository, not the working directory (which stays empty)."""
    from pipelines.cli.common import _rebased_storage

    rebased = _rebased_storage(REPO)
    assert rebased["storage"]["sqlite"]["base_dir"].startswith(str(REPO))
    home = tmp_path / "home"
    (home / "warehouse" / "tables").mkdir(parents=True)
    import polars as pl

    pl.DataFrame({"query_id": ["q1"]}).write_parquet(home / "warehouse" / "tables" / "queries.parquet")
    res = lrouter("--home", str(home), "lineage", "queries", cwd=elsewhere)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert list(elsewhere.iterdir()) == []


def test_run_refuses_a_bad_query_count_before_launching(elsewhere: Path, tmp_path: Path) -> None:
    res = lrouter("--home", str(tmp_path / "h"), "run", "setup", "--queries", "0", cwd=elsewhere,
                  env={"DAGSTER_HOME": str(tmp_path)})
    assert_one_line(res, 2, "--queries must be at least 1")


def test_import_names_a_missing_or_empty_file_in_one_line_and_writes_nothing(elsewhere: Path, tmp_path: Path) -> None:
    home = tmp_path / "h"
    res = lrouter("--home", str(home), "import", "queries", str(tmp_path / "mine.jsonl"), cwd=elsewhere)
    assert_one_line(res, 2, "import refused, nothing written", "mine.jsonl: cannot read file")
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset_idx,question,answer,A_correct,A_cost\n")
    res = lrouter("--home", str(home), "import", "mmr-bench", str(bad), cwd=elsewhere)
    assert_one_line(res, 2, "import refused, nothing written", "bad.csv: no data rows")
    assert not home.exists() and list(elsewhere.iterdir()) == []


# ------------------------------------------------------------------------------------------ lrouter route


@pytest.fixture(scope="module")
def trained_home(tiny_pipeline) -> Path:
    return tiny_pipeline[0]


@pytest.fixture(scope="module")
def image(trained_home: Path) -> Path:
    return next((trained_home / "warehouse" / "images").rglob("*.png"))


def test_route_names_a_mistyped_image_path(trained_home: Path, elsewhere: Path) -> None:
    res = lrouter("--home", str(trained_home), "route", "--image", "sing.png", "--question", "What?", cwd=elsewhere)
    assert_one_line(res, 2, "no image file at sing.png", "--image")
    res = lrouter("--home", str(trained_home), "route", "--image", str(elsewhere), "--question", "What?",
                  cwd=elsewhere)
    assert_one_line(res, 2, "it is a folder")


def test_route_names_a_file_that_is_no_image(trained_home: Path, elsewhere: Path) -> None:
    notes = elsewhere / "notes.png"
    notes.write_text("these are notes, not pixels")
    res = lrouter("--home", str(trained_home), "route", "--image", str(notes), "--question", "What?", cwd=elsewhere)
    assert_one_line(res, 2, f"{notes} is not an image", "PNG or JPEG")


def test_route_names_an_empty_question(trained_home: Path, image: Path, elsewhere: Path) -> None:
    res = lrouter("--home", str(trained_home), "route", "--image", str(image), "--question", "  ", cwd=elsewhere)
    assert_one_line(res, 2, "the question is empty", "--question")


def test_route_names_an_unknown_pool_model_and_lists_the_active_ones(trained_home: Path, image: Path,
                                                                     elsewhere: Path) -> None:
    res = lrouter("--home", str(trained_home), "route", "--image", str(image), "--question", "What?",
                  "--pool", "simvl-ultra:72b,gpt-9", cwd=elsewhere, timeout=300)
    assert_one_line(res, 1, "gpt-9", "simvl-ultra:72b", "active")


def test_route_without_a_trained_router_says_how_to_train_one(tmp_path: Path, image: Path, elsewhere: Path) -> None:
    home = tmp_path / "untrained"
    (home / "warehouse" / "tables").mkdir(parents=True)
    import polars as pl

    pl.DataFrame({"query_id": ["q1"]}).write_parquet(home / "warehouse" / "tables" / "queries.parquet")
    res = lrouter("--home", str(home), "route", "--image", str(image), "--question", "What?", cwd=elsewhere,
                  timeout=300)
    assert_one_line(res, 1, "no trained router", "make demo")


def test_models_list_on_a_real_home_lists_the_registry(trained_home: Path, elsewhere: Path) -> None:
    res = lrouter("--home", str(trained_home), "models", "list", cwd=elsewhere)
    assert res.returncode == 0 and "simvl-ultra:72b" in res.stdout, res.stderr


def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path)


def test_route_names_the_router_checkpoint_and_lambda_and_marks_simulated_models(trained_home: Path, image: Path,
                                                                                   elsewhere: Path) -> None:
    res = lrouter("--home", str(trained_home), "route", "--image", str(image), "--question", "What?",
                  cwd=elsewhere, timeout=300)
    assert res.returncode == 0, res.stderr
    first = res.stdout.splitlines()[0]
    # no deployment decision in this home: its checkpoint's LatentRouter serves, at lambda 0
    assert first.startswith("router: LatentRouter (deployed: LatentRouter), lambda 0, checkpoint ")
    assert "simvl-ultra:72b *" in res.stdout and "* simulated model" in res.stdout
    res = lrouter("--home", str(trained_home), "route", "--image", str(image), "--question", "What?",
                  "--lambda", "-1", cwd=elsewhere)
    assert_one_line(res, 2, "--lambda must be a finite number >= 0")


def test_two_homes_keep_their_own_dagster_instance(elsewhere: Path, tmp_path: Path) -> None:
    """Without $DAGSTER_HOME each home has its own instance (<home>/dagster): runs, partitions and lineage of
    one home never show in the other's."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    homes = [tmp_path / "a", tmp_path / "b"]
    for home in homes:
        res = lrouter("--home", str(home), "run", "setup", "--queries", "4", cwd=elsewhere, timeout=600)
        assert res.returncode == 0, res.stderr
    lrouter("--home", str(homes[0]), "run", "setup", "--queries", "4", cwd=elsewhere, timeout=600)
    counts = []
    for home in homes:
        assert (home / "dagster" / "dagster.yaml").is_file()
        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster"))) as instance:
            runs = instance.get_runs()
            assert {r.tags.get("lrouter/home") for r in runs} == {str(home.resolve())}
            counts.append(len(runs))
    assert counts == [2, 1]  # home a ran setup twice, b once: nothing crossed over
    assert list(elsewhere.iterdir()) == []
