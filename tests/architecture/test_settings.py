"""Settings are passed, not read through the environment as a config bus: no code outside tests writes
``os.environ``, every variable the code names is in ``pipelines.settings.VARIABLES``, and
``docs/environment.md`` lists each one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pipelines.settings import VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[2]
CODE = ("warehouse", "collectors", "router", "assets", "pipelines", "bench")
WRITES = {"setdefault", "pop", "update", "clear", "__setitem__", "__delitem__"}


def _files():
    for pkg in CODE:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and getattr(node.value, "id", "") == "os"


def test_no_code_outside_tests_writes_the_environment():
    bad = []
    for path in _files():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AugAssign) else [])
            if isinstance(node, ast.Delete):
                targets = node.targets
            if any(isinstance(t, ast.Subscript) and _is_environ(t.value) for t in targets):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                f = node.func
                if f.attr in WRITES and _is_environ(f.value) or f.attr == "putenv":
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, "os.environ written at " + ", ".join(bad)


def test_every_variable_the_code_names_is_listed():
    listed = {v.name for v in VARIABLES}
    named = set()
    for path in _files():
        named |= set(re.findall(r"\bLROUTER_[A-Z0-9_]+\b", path.read_text()))
    named -= {"LROUTER_TEST_PG_URL", "LROUTER_TEST_REDIS_URL", "LROUTER_TEST_S3_ENDPOINT"}  # CI's services
    assert named <= listed, f"not in pipelines.settings.VARIABLES: {sorted(named - listed)}"


def test_environment_page_lists_every_variable():
    page = (ROOT / "docs" / "environment.md").read_text()
    missing = [v.name for v in VARIABLES if f"`{v.name}`" not in page]
    assert not missing, f"docs/environment.md does not list {missing}"


def test_settings_read_once_and_home_overrides_the_warehouse(tmp_path):
    env = {"LROUTER_HOME": str(tmp_path / "a"), "LROUTER_WAREHOUSE": "s3://bucket/x", "LROUTER_DEBUG": "1"}
    s = Settings.from_env(env)
    assert s.home == (tmp_path / "a").resolve() and s.warehouse == "s3://bucket/x" and s.debug
    other = s.with_home(tmp_path / "b")  # --home: that home's own warehouse, whatever the environment says
    assert other.home == (tmp_path / "b").resolve() and other.warehouse == ""
    assert Settings.from_env({}).home == Path("./data").resolve()
