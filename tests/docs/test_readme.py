"""README.md's commands and Python examples still match the code, cheaply.

- Every command in README.md's shell blocks is classified: `lusifer` commands (also under
  `accelerate launch -m lusifer.cli`) must name a command that `lusifer --help` lists and
  only options that command has (each is parsed with `--help` appended, so nothing runs);
  repository paths must exist; `lusifer train` configs must load with their overrides;
  `... --help` commands and harmless shell lines run as written; `make` targets must be
  in the Makefile; `pip install` extras in pyproject.toml.
- Every Python block compiles and imports only names that exist in the lusifer package,
  calls only methods the objects have, with keyword arguments their signatures take.
- No markdown page (README.md, docs/) names a temporary folder, and relative links resolve.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # .venv/bin under `make test`
MARKDOWN = [README, *sorted((ROOT / "docs").rglob("*.md"))]

# Commands shown but not checked here, and why.
NOT_RUN = {
    ("accelerate", "config"): "interactive; run on the GPU machine",
}
# Shell programs run as written (in a scratch folder): cheap and harmless.
RUN_AS_WRITTEN = {"printf", "echo"}
REPO_PATH = re.compile(r"^(src|benchmarks|scripts|docs|tests)/")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m[1].lower(), m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)]


README_TEXT = README.read_text(encoding="utf-8")
SHELL = [b for lang, b in fenced_blocks(README_TEXT) if lang in {"bash", "sh", "shell", "console"}]
PYTHON = [b for lang, b in fenced_blocks(README_TEXT) if lang in {"python", "py"}]


def shell_commands(block: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comment lines dropped."""
    commands, current = [], ""
    for line in block.splitlines():
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        current = re.sub(r"\s+#(\s.*)?$", "", current).strip()  # a trailing comment
        if current and not current.startswith("#"):
            commands.append(current)
        current = ""
    return commands


COMMANDS = [c for block in SHELL for c in shell_commands(block)]


def lusifer_args(tokens: list[str]) -> list[str] | None:
    """The arguments after `lusifer` (or `-m lusifer.cli`), or None for another program."""
    if Path(tokens[0]).name == "lusifer":
        return tokens[1:]
    if "-m" in tokens:
        i = tokens.index("-m")
        if tokens[i + 1 : i + 2] == ["lusifer.cli"]:
            return tokens[i + 2 :]
    return None


def _start(command: str, cwd: Path) -> subprocess.Popen:
    """Start a README command in bash; `.venv/bin/` means this interpreter's bin folder."""
    command = command.replace(".venv/bin/", f"{BIN}/")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_as_written(command: str, cwd: Path) -> tuple[int, str, str]:
    proc = _start(command, cwd)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


TOP_HELP = ".venv/bin/lusifer --help"


class HelpRuns:
    """`lusifer --help` and the README's `lusifer ... --help` commands, run for real and
    at the same time (each starts Python and imports the CLI), collected when first read."""

    def __init__(self, commands: set[str]) -> None:
        self.procs = {c: _start(c, ROOT) for c in sorted(commands)}
        self.done: dict[str, tuple[int, str, str]] = {}

    def __getitem__(self, command: str) -> tuple[int, str, str]:
        if command not in self.done:
            proc = self.procs[command]
            out, err = proc.communicate(timeout=120)
            self.done[command] = (proc.returncode, out, err)
        return self.done[command]


@pytest.fixture(scope="module")
def help_runs():
    commands = {TOP_HELP}
    for command in COMMANDS:
        args = lusifer_args(shlex.split(command, comments=True))
        if args is not None and args[-1:] == ["--help"]:
            commands.add(command)
    runs = HelpRuns(commands)
    yield runs
    for command in runs.procs:
        runs[command]  # reap every process


@pytest.fixture(scope="module")
def cli_commands(help_runs) -> str:
    """`lusifer --help`, run for real: the installed entry point lists its commands."""
    code, out, err = help_runs[TOP_HELP]
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def cli():
    from typer.testing import CliRunner

    from lusifer.cli import app

    return CliRunner(), app


def test_readme_has_commands_and_python():
    assert len(COMMANDS) >= 10 and len(PYTHON) >= 1
    assert any(c == "make demo" for c in COMMANDS) and any(c == "make test" for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command(command, help_runs, cli, tmp_path):
    tokens = shlex.split(command, comments=True)
    program = Path(tokens[0]).name
    args = lusifer_args(tokens)
    if args is not None:
        _check_lusifer(command, args, cli, help_runs)
    elif program == "make":
        makefile = (ROOT / "Makefile").read_text()
        for target in tokens[1:]:
            if "=" not in target:
                assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target
    elif program == "pip" and tokens[1] == "install":
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]
        for spec in tokens[2:]:
            for extra in re.findall(r"\[([\w,-]+)\]", spec):
                assert set(extra.split(",")) <= set(extras), spec
    elif tuple(tokens[:2]) in NOT_RUN:
        pass
    elif program.startswith("python") and tokens[1:2] and tokens[1].startswith("benchmarks/"):
        # a benchmark script: it exists and its --help names every option the README gives
        assert (ROOT / tokens[1]).is_file(), tokens[1]
        code, out, err = run_as_written(f"{tokens[0]} {tokens[1]} --help", ROOT)
        assert code == 0, err
        for option in (t.split("=")[0] for t in tokens[2:] if t.startswith("--")):
            assert option in out, (option, command)
    elif program in RUN_AS_WRITTEN:
        code, _, err = run_as_written(command, tmp_path)
        assert code == 0, err
    else:
        pytest.fail(f"unclassified README command (add it to tests/docs/test_readme.py): {command}")


def _check_lusifer(command: str, args: list[str], cli, help_runs) -> None:
    runner, app = cli
    for arg in args:
        if REPO_PATH.match(arg):
            assert (ROOT / arg).exists(), f"{command}: {arg} does not exist"
    if args[-1:] == ["--help"]:  # cheap: run as written (by the help_runs fixture)
        code, out, err = help_runs[command]
        assert code == 0 and "Usage: lusifer" in out, err
        return
    # every option exists (parsed, then --help stops before anything runs)
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"{command}:\n{result.output}"
    if args[0] == "train":
        from lusifer.training.config import load_train_config

        positional = [a for a in args[2:] if not a.startswith("-")]
        overrides = [a for a in positional if "=" in a]
        load_train_config(ROOT / args[1], overrides)  # unknown keys or bad values raise


def _hint(value):
    """The class a call returns, from its type hints, when known."""
    try:
        hints = typing.get_type_hints(value)
    except Exception:
        return None
    ret = hints.get("return")
    return ret if isinstance(ret, type) else None


def _check_call(func, node: ast.Call, where: str) -> None:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    for kw in node.keywords:
        if kw.arg is not None:
            assert kw.arg in params, f"{where}: {func.__qualname__} takes no {kw.arg}="


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_readme_python_uses_real_names(index):
    source = PYTHON[index]
    tree = ast.parse(source)
    compile(source, f"README.md python block {index}", "exec")
    objects: dict[str, object] = {}  # name -> the lusifer object it is bound to
    kinds: dict[str, type] = {}  # variable -> the class it holds, when known
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] == "lusifer":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                    objects[alias.asname or alias.name] = getattr(module, alias.name)
            else:
                assert importlib.util.find_spec(node.module.split(".")[0]), node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "lusifer":
                    importlib.import_module(alias.name)
                else:
                    assert importlib.util.find_spec(alias.name.split(".")[0]), alias.name
    # statements in order: track what each variable holds, check calls on known objects
    for stmt in tree.body:
        for node in ast.walk(stmt):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            target = None
            if isinstance(func, ast.Name) and func.id in objects:
                target = objects[func.id]
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                owner = objects.get(func.value.id) or kinds.get(func.value.id)
                if owner is not None:
                    assert hasattr(owner, func.attr), f"{func.value.id} has no .{func.attr}"
                    target = getattr(owner, func.attr)
            if target is not None:
                _check_call(target, node, f"README python block {index}")
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call):
            func = stmt.value.func
            called = None
            if isinstance(func, ast.Name):
                called = objects.get(func.id)
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                owner = objects.get(func.value.id) or kinds.get(func.value.id)
                called = getattr(owner, func.attr, None) if owner is not None else None
            kind = _hint(called) if called is not None else None
            if kind is None and isinstance(called, type):
                kind = called
            for tgt in stmt.targets:
                if isinstance(tgt, ast.Name) and kind is not None:
                    kinds[tgt.id] = kind
    unknown = {
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name)
        and isinstance(n.ctx, ast.Load)
        and not hasattr(builtins, n.id)
        and n.id not in objects
        and not any(
            isinstance(a, ast.Name) and a.id == n.id and isinstance(a.ctx, ast.Store)
            for a in ast.walk(tree)
        )
    }
    imported = {
        (a.asname or a.name).split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    assert unknown <= imported, f"names used but never defined: {sorted(unknown - imported)}"


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_names_no_temporary_folder(page):
    lines = [
        f"{i}: {line}" for i, line in enumerate(page.read_text().splitlines(), 1) if "/tmp" in line
    ]
    assert not lines, f"{page.relative_to(ROOT)} names /tmp:\n" + "\n".join(lines)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a markdown page."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    heads = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_resolve(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.relative_to(ROOT)}: broken link {link}"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"{page.relative_to(ROOT)}: no #{anchor}"


def test_every_named_lusifer_command_exists(cli_commands):
    code = " ".join(re.findall(r"`([^`\n]+)`", README_TEXT)) + "\n" + "\n".join(SHELL)
    named = set(re.findall(r"(?:^|[\s/])lusifer\s+([a-z][\w-]*)", code, re.M))
    assert named, "the README names no lusifer command"
    listed = set(re.findall(r"^\W*([a-z][\w-]*)\s{2,}\S", cli_commands, re.M))
    assert named <= listed, f"not in `lusifer --help`: {sorted(named - listed)}"
