"""The compiled hot path (setup.py's default for a regular install) passes the same suites.

A regular build compiles the hot-path modules (``setup.py``'s ``COMPILED_MODULES``: the frame
reader, the decoder composition, zlib-stream, zstd-stream, ETF) with mypyc. mypyc enforces
annotations at run time and turns closures and classes into native objects, so source that is
right for the interpreter can behave differently compiled; the way to know is to run the
tests of those modules against it. The tests themselves run against the sources (the test
command's editable install is always pure Python).

* One build per run (module-scoped fixture, ~20-40 s): the package, setup.py and
  pyproject.toml are copied into pytest's tmp dir and a wheel is built there the default way
  (``pip wheel --no-build-isolation``: what ``pip install .`` does with this environment's
  mypy), with ``GATEWAY_PROTO_COMPILE=1`` only so that a compile error fails here with its
  message instead of quietly building pure Python; then unpacked. Nothing is written to the
  checkout. Skipped, saying why, without mypyc, a C compiler or the Python headers.
* The codec, ETF (with its Erlang oracle where ``erl`` exists) and websocket suites then run
  in a subprocess whose ``gateway_proto`` is that unpacked wheel, and must pass. ETF's
  differential checks against the pure codec are in tests/test_etf_compiled.py. (The whole
  suite, run the same way once by hand, passed but for one pure-only test, now skipped when
  compiled: the pure ETF decoder's behaviour under a nearly exhausted recursion limit.)
* setup.py's decisions (when to compile, when to fall back to pure Python, when to fail) are
  checked without a compiler run, and its fallback on a real compiler error with a tiny
  extension that does not compile.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from setuptools import Distribution, Extension
from test_etf_compiled import load_setup, why_no_compile

ROOT = Path(__file__).resolve().parents[1]
#: The suites of the compiled modules (and of the core's batch path that calls them).
SUITES = [
    "test_ws_frames.py",
    "test_ws_handshake.py",
    "test_ws_connection.py",
    "test_codecs.py",
    "test_wire_formats.py",
    "test_zstd_payload.py",
    "test_etf.py",
    "test_receive_messages.py",
    "test_fuzz_ws.py",
]


def setup_constant(name: str) -> object:
    """A constant assigned in setup.py (it calls setup() when run, so it is read, not imported)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py assigns no {name}")


COMPILED_MODULES = setup_constant("COMPILED_MODULES")
MYPY_FLAGS = setup_constant("MYPY_FLAGS")
GROUP_NAME = setup_constant("GROUP_NAME")
assert isinstance(COMPILED_MODULES, list) and isinstance(MYPY_FLAGS, list)

SETUP = load_setup()
#: What a wheel build reads from the checkout.
BUILD_INPUTS = ["setup.py", "pyproject.toml", "README.md", "gateway_proto", "adapters"]


def run_in(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python in ``tree`` (so ``gateway_proto`` is the copy there), output captured."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, *args], cwd=tree, capture_output=True, text=True, env=env, check=False
    )


@pytest.fixture(scope="module")
def compiled_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = why_no_compile()
    if reason is not None:
        pytest.skip(f"cannot build the compiled hot path with mypyc: {reason}")
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.so")
            )
        else:
            shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path_factory.mktemp("wheels")
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_PROTO_NO_COMPILE"}
    env["GATEWAY_PROTO_COMPILE"] = "1"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    result = subprocess.run(
        [*build, "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, (
        f"the wheel build failed:\n{result.stdout[-4000:]}\n{result.stderr}"
    )
    (wheel,) = wheels.glob("gateway_proto-*.whl")
    tree = tmp_path_factory.mktemp("mypyc-hot-path")
    zipfile.ZipFile(wheel).extractall(tree)
    return tree


def test_the_listed_modules_import_compiled(compiled_tree: Path) -> None:
    """Build: in the copy, every listed module is mypyc's extension, the rest is source."""
    names = [
        str(m).removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for m in COMPILED_MODULES
    ]
    probe = (
        "import importlib, json, sys\n"
        f"names = {names!r} + ['gateway_proto._connection']\n"
        "print(json.dumps({n: importlib.import_module(n).__file__ for n in names}))\n"
    )
    result = run_in(compiled_tree, "-c", probe)
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    for name in names:
        assert files[name].startswith(str(compiled_tree)), (name, files[name])
        assert files[name].endswith((".so", ".pyd")), (name, files[name])
    assert files["gateway_proto._connection"].endswith(".py")


def test_the_suites_pass_against_the_compiled_build(compiled_tree: Path) -> None:
    """The codec and websocket suites, unchanged, pass with the compiled modules."""
    # Run first in the same process: proof that the suites below see the compiled modules.
    probe = compiled_tree / "test_probe_compiled.py"
    probe.write_text(
        "import gateway_proto.ws._frames as frames, gateway_proto._codecs as codecs\n"
        "def test_the_suites_see_the_compiled_modules():\n"
        "    assert frames.__file__.endswith(('.so', '.pyd')), frames.__file__\n"
        "    assert codecs.__file__.endswith(('.so', '.pyd')), codecs.__file__\n",
        encoding="utf-8",
    )
    suites = [str(probe), *(str(ROOT / "tests" / name) for name in SUITES)]
    result = run_in(
        compiled_tree,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--rootdir",
        str(ROOT),
        *suites,
    )
    tail = "\n".join(result.stdout.splitlines()[-40:])
    assert result.returncode == 0, f"{tail}\n{result.stderr[-2000:]}"
    assert " passed" in tail and " failed" not in tail, tail


# -- setup.py's decisions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "command", "mode"),
    [
        ({}, "bdist_wheel", "best-effort"),
        ({}, "build_ext", "best-effort"),
        ({"GATEWAY_PROTO_COMPILE": "1"}, "bdist_wheel", "required"),
        ({"GATEWAY_PROTO_NO_COMPILE": "1"}, "bdist_wheel", "off"),
        ({"GATEWAY_PROTO_NO_COMPILE": "1", "GATEWAY_PROTO_COMPILE": "1"}, "bdist_wheel", "off"),
        ({}, "editable_wheel", "off"),  # the sources stay what is imported
        ({}, "egg_info", "off"),  # metadata only: nothing to compile
        ({}, "sdist", "off"),
    ],
)
def test_compile_mode(environ, command, mode):
    assert SETUP.compile_mode(environ, ["setup.py", command]) == mode


def test_compile_required_with_an_editable_install_is_refused():
    with pytest.raises(SystemExit, match="editable"):
        SETUP.compile_mode({"GATEWAY_PROTO_COMPILE": "1"}, ["setup.py", "editable_wheel"])


def test_no_mypyc_or_compiler_builds_pure_unless_required(monkeypatch, capsys):
    monkeypatch.setattr(SETUP, "why_no_compile", lambda: "no C compiler: 'cc'")
    assert SETUP.ext_modules("best-effort") == []
    assert "building pure Python (no C compiler" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="cannot be compiled: no C compiler"):
        SETUP.ext_modules("required")
    assert SETUP.ext_modules("off") == []


def _broken_build(tmp_path, mode):
    """build_ext of one extension whose C does not compile, with setup.py's build_ext."""
    (tmp_path / "broken.c").write_text("this is not C;\n", encoding="utf-8")
    dist = Distribution({"name": "broken", "ext_modules": [Extension("broken", ["broken.c"])]})
    dist.script_args = ["build_ext"]
    command = SETUP.OptionalBuildExt(dist)
    command.mode = mode
    command.build_lib = str(tmp_path / "lib")
    command.build_temp = str(tmp_path / "obj")
    command.ensure_finalized()
    return command


def test_a_compiler_error_builds_pure_unless_required(tmp_path, monkeypatch, capsys):
    if why_no_compile() is not None:
        pytest.skip(f"no compiler here: {why_no_compile()}")
    monkeypatch.chdir(tmp_path)
    command = _broken_build(tmp_path, "best-effort")
    command.run()  # no exception: the build goes on, pure
    assert command.extensions == [] and command.distribution.ext_modules == []
    assert not list((tmp_path / "lib").glob("broken*"))
    assert "building pure Python (compiling failed" in capsys.readouterr().err
    with pytest.raises(Exception, match="error"):
        _broken_build(tmp_path, "required").run()
