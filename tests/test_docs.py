"""The README and docs/ stay true to the product: every command they show exists with the flags they use.

Fenced ``bash`` blocks of README.md and docs/*.md are split into simple commands. ``lrouter`` commands are
parsed with the real argparse parser (never executed, except ``--help``, which runs as a subprocess);
``make`` targets must exist in the Makefile; ``dagster`` jobs and assets must exist; ``python`` scripts must
exist and define the flags used, and inline Python must compile and import names that exist. Inline
``lrouter ...`` code spans in the prose must name real subcommands and flags. Commands that cannot be
checked here (a clone, a running server, the shell's own builtins) are skipped by name in ``SKIPPED``; any
other program fails the test until it is checked or listed there. Relative links must resolve to files in
the repository, without anchors; every docs/ page is linked from the README, which stays under 15 KB.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOC_PAGES]
README_MAX_BYTES = 15_000

# programs whose commands are not checked here, and why
SKIPPED = {
    "git": "a clone needs the network",
    "cd": "shell builtin",
    "export": "shell builtin",
    "set": "shell builtin",
    ".": "shell builtin (sources a user's file)",
    "eval": "shell builtin (the command it evaluates is checked where it is shown)",
    "cp": "copies a user's file",
    "curl": "needs a running server",
}
LROUTER = {"lrouter", ".venv/bin/lrouter"}
PYTHON = {"python", "python3", ".venv/bin/python"}
DAGSTER = {"dagster", ".venv/bin/dagster"}
DAGSTER_SERVICES = {"dagster-daemon", "dagster-celery", "dagster-webserver"}
REPO_PREFIXES = ("deploy/", "bench/", "docs/", "collectors/", "router/", "warehouse/", "assets/", "pipelines/",
                 "tests/", ".ci/")
USER_FILES = {"deploy/cluster.env"}  # created by the reader from a checked-in example
SEPARATORS = {";", "&&", "||", "|", "&"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SUBSTITUTION = re.compile(r"\$\([^()]*\)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_LROUTER = re.compile(r"`(?:\.venv/bin/)?lrouter ([^`]+)`")


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    argv: tuple[str, ...]

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: {shlex.join(self.argv)}"


def fenced_blocks(page: Path, lang: str) -> list[tuple[int, str]]:
    """(first line number, text) of every ```lang block of a page."""
    blocks, current, start = [], None, 0
    for n, line in enumerate(page.read_text().splitlines(), 1):
        stripped = line.strip()
        if current is None and stripped == f"```{lang}":
            current, start = [], n + 1
        elif current is not None and stripped.startswith("```"):
            blocks.append((start, "\n".join(current)))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def _tokens(text: str) -> list[str]:
    lex = shlex.shlex(SUBSTITUTION.sub("X", text), posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    return list(lex)


def block_commands(page: Path, start: int, text: str) -> list[Command]:
    """Simple commands of a bash block: continuation lines joined, comments dropped, split at ; && || | &,
    leading VAR=value assignments and ``env -u NAME`` removed."""
    out: list[Command] = []
    buf, first = "", start
    for n, line in enumerate(text.splitlines(), start):
        if not buf:
            first = n
        buf += line + "\n"
        if buf.rstrip("\n").endswith("\\"):
            buf = buf.rstrip("\n")[:-1] + " "
            continue
        try:
            tokens = _tokens(buf)
        except ValueError:  # a quote spans lines: read on
            continue
        buf = ""
        segment: list[str] = []
        for tok in [*tokens, ";"]:
            if tok not in SEPARATORS:
                segment.append(tok)
                continue
            while segment and ASSIGNMENT.match(segment[0]):
                segment.pop(0)
            if segment[:2] == ["env", "-u"]:
                segment = segment[3:]
            if segment:
                out.append(Command(page, first, tuple(segment)))
            segment = []
    assert not buf, f"{page.relative_to(ROOT)}:{first}: unterminated command in a bash block"
    return out


def all_commands() -> list[Command]:
    return [c for page in PAGES for start, text in fenced_blocks(page, "bash")
            for c in block_commands(page, start, text)]


COMMANDS = all_commands()


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _parse(argv: list[str]) -> tuple[int | None, str]:
    """Parse with the real parser; (exit code or None when it parsed, stderr)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0), err.getvalue()
    return None, ""


def _makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


def _check_python_code(code: str, where: str) -> None:
    """Inline Python compiles and every ``from X import Y`` names something that exists."""
    tree = ast.parse(code, filename=where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


def _check_repo_paths(cmd: Command) -> None:
    for tok in cmd.argv:
        if tok.startswith(REPO_PREFIXES) and tok.rstrip("/") not in USER_FILES:
            assert (ROOT / tok.rstrip("/")).exists(), f"{cmd.where()}: {tok} does not exist"


def check_command(cmd: Command) -> None:
    prog, args = cmd.argv[0], list(cmd.argv[1:])
    _check_repo_paths(cmd)
    if prog in SKIPPED:
        return
    if prog in LROUTER:
        code, err = _parse(args)
        assert code in (None, 0), f"{cmd.where()}: the CLI refuses it: {err.strip()}"
    elif prog == "make":
        missing = {t for t in args if not ASSIGNMENT.match(t)} - _makefile_targets()
        assert not missing, f"{cmd.where()}: no Makefile target {sorted(missing)}"
    elif prog in PYTHON:
        if args[:1] == ["-c"]:
            _check_python_code(args[1], cmd.where())
            return
        script = ROOT / args[0]
        assert script.is_file(), f"{cmd.where()}: {args[0]} does not exist"
        source = script.read_text()
        for flag in (a.split("=")[0] for a in args[1:] if a.startswith("--") and a != "--help"):
            assert f'"{flag}"' in source, f"{cmd.where()}: {args[0]} defines no {flag}"
    elif prog in DAGSTER:
        if "-m" in args:
            module = args[args.index("-m") + 1]
            assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{cmd.where()}: no module {module}"
        if "-j" in args:
            job = args[args.index("-j") + 1]
            assert f'"{job}"' in (ROOT / "pipelines" / "jobs.py").read_text(), f"{cmd.where()}: no job {job}"
        if "--select" in args:
            assets = "\n".join(p.read_text() for p in (ROOT / "assets").glob("*.py"))
            for name in args[args.index("--select") + 1].split(","):
                assert re.search(rf"^def {re.escape(name)}\(", assets, flags=re.M), \
                    f"{cmd.where()}: no asset {name}"
    elif prog in DAGSTER_SERVICES:
        pass  # long-running services; their config files are checked by _check_repo_paths
    else:
        pytest.fail(f"{cmd.where()}: {prog!r} is neither checked nor in SKIPPED; add a check or a skip reason")


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: f"{c.page.name}:{c.line}")
def test_documented_command_exists(cmd: Command) -> None:
    check_command(cmd)


def test_docs_show_lrouter_commands() -> None:
    """The extraction finds the README's commands (a broken fence would silently check nothing)."""
    readme = [c for c in COMMANDS if c.page == README]
    assert any(c.argv[0] in LROUTER for c in readme)
    assert {("make", "demo"), ("make", "test")} <= {c.argv[:2] for c in readme}


def test_help_commands_run() -> None:
    """The cheap commands run for real: every documented ``lrouter ... --help``."""
    helps = sorted({c.argv[1:] for c in COMMANDS if c.argv[0] in LROUTER and "--help" in c.argv})
    assert helps, "no documented --help command"
    for args in helps:
        proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0 and "usage: lrouter" in proc.stdout, (args, proc.stderr[-2000:])


def test_inline_lrouter_commands_name_real_subcommands_and_flags() -> None:
    """`lrouter SUB ... --flag` in the prose: SUB exists and so does every --flag (placeholders allowed)."""
    root = build_parser()
    problems = []
    for page in PAGES:
        for n, line in enumerate(page.read_text().splitlines(), 1):
            for span in INLINE_LROUTER.findall(line):
                words = [w.strip("[]()'\",") for w in span.split()]
                parser, chain = root, [root]
                for w in words:
                    subs = _subcommands(parser)
                    if not subs or w.startswith("-"):
                        break
                    if w in subs:
                        parser = subs[w]
                        chain.append(parser)
                    elif re.fullmatch(r"[a-z][a-z-]*", w):  # a name, not a placeholder (COMMAND, TABLE, ...)
                        problems.append(f"{page.name}:{n}: `lrouter {span}`: no subcommand {w!r}")
                        break
                    else:
                        break
                known = {o for p in chain for o in p._option_string_actions}
                for w in words:
                    flag = w.split("=")[0]
                    if flag.startswith("--") and flag not in known:
                        problems.append(f"{page.name}:{n}: `lrouter {span}`: no flag {flag}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_compile_and_import(page: Path) -> None:
    for start, code in fenced_blocks(page, "python"):
        _check_python_code(code, f"{page.relative_to(ROOT)}:{start}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    """Relative links point at files of the repository, without anchors (headings move; files stay)."""
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        assert "#" not in target, f"{page.name}: link {target!r} has an anchor; link the page"
        path = (page.parent / target).resolve()
        assert path.is_relative_to(ROOT), f"{page.name}: link {target!r} points outside the repository"
        assert path.exists(), f"{page.name}: link {target!r} does not resolve"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_nothing_points_outside_the_repository(page: Path) -> None:
    text = page.read_text()
    for outside in ("../shared", "/work/"):
        assert outside not in text, f"{page.name} mentions {outside}"


_PREFIXES = "|".join(re.escape(p) for p in REPO_PREFIXES)
REPO_FILE = re.compile(rf"`((?:{_PREFIXES})[\w./-]*\.(?:py|yaml|sh|toml|example|md))`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_repository_files_exist(page: Path) -> None:
    """A file of the repository named in the prose (`bench/gateway.py`, `deploy/celery.yaml`) exists."""
    missing = [f for f in REPO_FILE.findall(page.read_text()) if not (ROOT / f).is_file()]
    assert not missing, f"{page.name} names files that do not exist: {missing}"


def test_readme_links_every_docs_page_and_stays_short() -> None:
    text = README.read_text()
    linked = {(ROOT / t).resolve() for t in LINK.findall(text)}
    missing = [p.name for p in DOC_PAGES if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from the README: {missing}"
    size = len(text.encode())
    assert size < README_MAX_BYTES, f"README.md is {size} bytes; keep it under {README_MAX_BYTES}"


def test_checker_catches_a_wrong_flag_and_subcommand() -> None:
    """The check fails on a flag or subcommand the CLI does not have (so the tests above can fail)."""
    page = README
    bad = [Command(page, 1, (".venv/bin/lrouter", "route", "--no-such-flag", "x")),
           Command(page, 1, (".venv/bin/lrouter", "no-such-command")),
           Command(page, 1, ("make", "no-such-target")),
           Command(page, 1, ("some-unknown-tool", "--x"))]
    for cmd in bad:
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            check_command(cmd)
    check_command(Command(page, 1, (".venv/bin/lrouter", "route", "--image", "a.png", "--question", "q")))
