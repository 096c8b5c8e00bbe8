"""The linters are part of the test suite, so one command proves the tree is clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed in this environment: pip install -e '.[dev]'")
    return found


def _run(*argv: str) -> None:
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_check():
    _run(_tool("ruff"), "check", ".")


def test_ruff_format():
    _run(_tool("ruff"), "format", "--check", ".")


def test_mypy_strict():
    _run(_tool("mypy"), "--strict", "gateway_proto", "adapters")
