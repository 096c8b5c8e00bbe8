"""The compiled hot path, built by default wherever it can be; every piece of metadata lives in pyproject.toml.

A regular install (``pip install .``, ``pip wheel .``, a wheel built from the sdist) compiles
the modules every inbound message passes through to C extensions with mypyc: the websocket
frame reader (``gateway_proto/ws/_frames.py``), the decoder composition
(``gateway_proto/_codecs/__init__.py``), zlib-stream, zstd-stream and the ETF codec. The
rest of the package stays pure Python. mypy (which carries mypyc) and attrs are build
requirements in pyproject.toml, so an isolated build has them.

Where it cannot compile — no C compiler or no Python headers, mypyc missing from a
``--no-build-isolation`` build, or any step of the compilation failing — the build goes on
as pure Python, silently (one line on stderr, which pip shows with ``-v``), as aiohttp,
websockets and msgpack do with their C accelerators. The wheel then holds no extension at
all: never some of them (a module without the shared library it needs would not import).

Environment variables, read at build time:

* ``GATEWAY_PROTO_NO_COMPILE=1``: never compile (a pure wheel on any machine);
* ``GATEWAY_PROTO_COMPILE=1``: compilation is required: a build that cannot compile fails,
  saying why, instead of falling back (for CI of the compiled build).

An editable install (``pip install -e .``, as the test command and CI use) is always pure
Python: the extensions would land beside the sources in the tree and hide every later edit
of them; ``GATEWAY_PROTO_COMPILE=1`` with ``-e`` is refused for that reason. The tests run
against the sources, and tests/test_compiled_build.py builds a wheel the default way from a
copy of the tree and runs the hot path's suites against it.

Why: the speed targets (README, "Status"; ``bench/bench_realistic.py``). Why mypyc rather
than hand-written C (or erlpack): mypyc translates the same type-checked source the pure
build runs, so there is one implementation to review and to test, and the C it generates is
checked: every ``data[pos]`` is bounds-checked (IndexError, never a read past the buffer),
values are type-checked where the annotations say, reference counts are generated rather
than kept by hand. A hostile length or a truncated term stays a ``DecodeError``. What the
generated C does not check is the depth of its own recursion: ETF nesting is bounded by
``MAX_DEPTH``, and each level costs C stack (see tests/test_etf_compiled.py).

The core (``_connection.py``) and the websocket connection (``ws/_connection.py``) stay pure
Python, for two reasons measured on ``bench/bench_realistic.py`` (both compile): mypyc checks
every argument against its annotation, so their documented ``LocalProtocolError`` for a
wrong-typed argument (a non-bool ``paused``, a str transport id, a non-int close code, ...)
becomes a ``TypeError`` (50 failures in the core's suites, 4 in the websocket ones, the
fuzz harness among them, which feeds ints where bools go), and the fuzz harness's
self-tests, which plant a bug by replacing a method on the class, cannot reach a native
method (4 more); and neither buys speed: their per-message work is on dicts typed ``Any``
and on attrs objects, which compiled code reaches through the same generic calls, so the
core and bytes figures stayed within the run-to-run noise (about ±5 %).

mypy reads the modules these pull in with ``--follow-imports=silent``: only the listed
modules are compiled, so only their own type errors may stop the build.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: What is compiled, and the mypy flags (tests/test_compiled_build.py builds the same way).
COMPILED_MODULES = [
    "gateway_proto/ws/_frames.py",
    "gateway_proto/_codecs/__init__.py",
    "gateway_proto/_codecs/_zlib.py",
    "gateway_proto/_codecs/_zstd.py",
    "gateway_proto/_codecs/_etf.py",
]
MYPY_FLAGS = ["--follow-imports=silent"]
#: The shared library of the compiled modules: ``gateway_proto__mypyc`` at the top level.
GROUP_NAME = "gateway_proto"
#: setup.py commands that build extensions; metadata and sdist commands never compile.
BUILD_COMMANDS = frozenset({"bdist_wheel", "build", "build_ext", "install"})
EDITABLE_COMMANDS = frozenset({"editable_wheel", "develop"})


def compile_mode(environ: Mapping[str, str], argv: Sequence[str]) -> str:
    """``"off"``, ``"best-effort"`` (the default) or ``"required"``, from the variables and command.

    Raises:
        SystemExit: ``GATEWAY_PROTO_COMPILE=1`` with an editable install.

    """
    if environ.get("GATEWAY_PROTO_NO_COMPILE", "") == "1":
        return "off"
    required = environ.get("GATEWAY_PROTO_COMPILE", "") == "1"
    if EDITABLE_COMMANDS.intersection(argv):
        if required:
            sys.exit(
                "GATEWAY_PROTO_COMPILE=1 is not supported with an editable install: the "
                "compiled modules would sit in the source tree and shadow their sources. "
                "Use a regular install: pip install ."
            )
        return "off"
    if not BUILD_COMMANDS.intersection(argv):
        return "off"
    return "required" if required else "best-effort"


def why_no_compile() -> str | None:
    """Why mypyc cannot build an extension in this environment, or ``None`` if it can."""
    try:
        import mypyc.build  # noqa: F401, PLC0415 - only needed to compile
    except ImportError:
        return "mypyc is not installed (pip install mypy)"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler: {compiler!r} (the one Python was built with) is not on PATH"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "the Python headers (Python.h) are not installed"
    return None


def _pure(mode: str, reason: str) -> list[object]:
    """Give up compiling: fail when it was required, else say why on stderr and build pure."""
    if mode == "required":
        sys.exit(f"GATEWAY_PROTO_COMPILE=1, but the hot path cannot be compiled: {reason}")
    print(f"gateway_proto: building pure Python ({reason})", file=sys.stderr)
    return []


def ext_modules(mode: str) -> list[object]:
    """The mypyc extensions, or none (see :func:`compile_mode`)."""
    if mode == "off":
        return []
    reason = why_no_compile()
    if reason is not None:
        return _pure(mode, reason)
    from mypyc.build import mypycify  # noqa: PLC0415 - a build requirement, not a dependency

    try:
        return list(
            mypycify([*COMPILED_MODULES, *MYPY_FLAGS], opt_level="3", group_name=GROUP_NAME)
        )
    except (Exception, SystemExit) as exc:  # mypy reports type errors with SystemExit
        return _pure(mode, f"mypyc failed: {type(exc).__name__}: {exc}")


class OptionalBuildExt(build_ext):
    """build_ext that, unless compilation is required, ends pure Python when any extension fails.

    All or nothing: the outputs already built are removed, since a module's extension
    without the group's shared library (or the reverse) would not import.
    """

    mode = "best-effort"

    def run(self) -> None:
        """Build every extension, or (best effort) none."""
        try:
            super().run()
        except Exception as exc:  # a compiler or linker error, whatever its class
            if self.mode == "required":
                raise
            for ext in self.extensions:
                path = self.get_ext_fullpath(ext.name)  # in the tree too, with --inplace
                if os.path.exists(path):
                    os.remove(path)
            self.extensions = []
            self.distribution.ext_modules = []
            _pure(self.mode, f"compiling failed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import it
    MODE = compile_mode(os.environ, sys.argv)
    OptionalBuildExt.mode = MODE
    setup(ext_modules=ext_modules(MODE), cmdclass={"build_ext": OptionalBuildExt})
