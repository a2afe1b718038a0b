"""The CLI turns numpy's huge-page advice off before numpy is imported, unless the user set it."""

from __future__ import annotations

import os
import subprocess
import sys

from onnxslim import cli


def test_the_cli_sets_numpy_s_huge_page_advice_off(monkeypatch, capsys):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    try:
        cli.main(["passes"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert os.environ["NUMPY_MADVISE_HUGEPAGE"] == "0"


def test_the_user_s_setting_wins(monkeypatch, capsys):
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    try:
        cli.main(["passes"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert os.environ["NUMPY_MADVISE_HUGEPAGE"] == "1"


def test_numpy_is_not_imported_before_the_setting():
    code = "import sys, onnxslim.cli; print('numpy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"  # else the setting would come too late to matter
