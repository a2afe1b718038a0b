"""The README stays a short user's guide that matches the code, and the documents it points to exist.

The README is what a newcomer reads first: its size is capped, its links must resolve, its CLI
reference must name every option the commands take, and every `onnxslim ...` command it shows
must parse against the real CLI (so a renamed option breaks this test, not the reader). Each
registered pass has its page under docs/passes/, and each command's --help shows an example that
parses too.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from onnxslim import cli

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
README_MAX_BYTES = 12 * 1024
DOCS = [README, REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
TEST_COMMAND = "pip install -e '.[cpu,test,corpus]' && python -m pytest -q"  # .ci/run runs exactly this


def registered_passes() -> list[str]:
    """Pass names as `onnxslim passes` prints them: the user-facing list, whatever registers them."""
    out = subprocess.run([sys.executable, "-m", "onnxslim", "passes"], capture_output=True, text=True, check=True)
    return re.findall(r"^(\S+) \((?:exact|lossy)\):", out.stdout, flags=re.M)


def relative_links(markdown: str) -> list[str]:
    links = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", markdown)
    return [link for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]


def shell_commands(markdown: str) -> list[str]:
    """The `onnxslim ...` commands of the ```sh blocks, continuation lines joined, `&&` chains split."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.split(" #")[0].strip()
                if part.startswith("onnxslim "):
                    commands.append(part)
    return commands


def parse(command: str) -> click.Context:
    """Parse a command line against the real CLI without running it (click raises on a bad option)."""
    _, name, *args = shlex.split(command)
    sub = cli.cli.commands[name]
    return sub.make_context(name, args, parent=cli.cli.make_context("onnxslim", [name]))


def test_readme_is_short():
    assert len(README.read_bytes()) <= README_MAX_BYTES


def test_readme_keeps_the_test_command_ci_runs():
    assert TEST_COMMAND in README.read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "-e '.[cpu,test,corpus]'" in ci and "\npython -m pytest -q\n" in ci


def test_every_registered_pass_has_its_page():
    names = registered_passes()
    assert "quantize" in names and "dce" in names
    missing = [n for n in names if not (REPO / "docs" / "passes" / f"{n}.md").is_file()]
    assert not missing


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc):
    broken = [link for link in relative_links(doc.read_text())
              if not (doc.parent / link.split("#")[0]).exists()]
    assert not broken


def test_readme_reference_names_every_command_and_option():
    text = README.read_text()
    for name, command in cli.cli.commands.items():
        assert f"onnxslim {name}" in text
        for param in command.params:
            if isinstance(param, click.Option):
                assert any(f"`{opt}" in text or f" {opt}" in text for opt in param.opts), (name, param.opts)


def test_readme_commands_parse():
    commands = shell_commands(README.read_text())
    assert len(commands) >= 5
    first = commands[0]
    assert "--passes quantize" in first and "--calibration-data" in first  # the first run compresses
    for command in commands:
        parse(command)


def test_shell_commands_finds_chained_and_continued_lines():
    text = "```sh\npip install x && onnxslim optimize a.onnx \\\n    --passes dce   # why\n```\n"
    assert shell_commands(text) == ["onnxslim optimize a.onnx      --passes dce"]


@pytest.mark.parametrize("name", sorted(cli.EXAMPLES))
def test_help_shows_an_example_that_parses(name):
    out = subprocess.run([sys.executable, "-m", "onnxslim", name, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert cli.EXAMPLES[name] in out.stdout
    parse(cli.EXAMPLES[name])


def test_a_bad_option_does_not_parse():
    with pytest.raises(click.UsageError):
        parse("onnxslim optimize m.onnx --no-such-option")
