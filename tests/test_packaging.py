"""docs/architecture.md §2: adapters/ installs as gateway_proto.adapters, never as a top-level package."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_maps_adapters_under_the_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        # The layout is the same either way; the compiled build has its own test
        # (tests/test_compiled_build.py), which builds from a copy, not in the checkout.
        env={**os.environ, "GATEWAY_PROTO_NO_COMPILE": "1"},
    )
    (wheel,) = tmp_path.glob("gateway_proto-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gateway_proto/adapters/__init__.py" in names
    assert "gateway_proto/py.typed" in names
    assert not [n for n in names if n.startswith("adapters/")]
    assert not [n for n in names if n.startswith(("tests/", "fuzz/", "bench/"))]


def test_installed_package_exposes_adapters_and_no_top_level_adapters(tmp_path):
    probe = (
        "import importlib.util, gateway_proto.adapters as a;"
        "assert importlib.util.find_spec('adapters') is None, 'top-level adapters importable';"
        "print(a.__name__)"
    )
    # Run from an unrelated folder so the checkout's own adapters/ is not on sys.path.
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "gateway_proto.adapters"
