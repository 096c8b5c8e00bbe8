"""Optional compiled build of the hot path; every piece of metadata lives in pyproject.toml.

By default this file adds nothing: ``pip install .`` and ``pip install -e '.[dev]'`` build
the same pure-Python wheel as without it, on a machine with only Python and pip.

With ``GATEWAY_PROTO_COMPILE=1`` set at build time, the modules every inbound message passes
through are compiled to C extensions with mypyc: the websocket frame reader
(``gateway_proto/ws/_frames.py``), the decoder composition (``gateway_proto/_codecs/__init__.py``),
zlib-stream, zstd-stream and the ETF codec. The rest of the package stays pure Python::

    pip install mypy 'setuptools>=77' attrs    # mypyc, and what mypy needs to read the package
    GATEWAY_PROTO_COMPILE=1 pip install --no-build-isolation .

The wheel then holds a ``.so`` beside each of those ``.py`` files and one shared library,
``gateway_proto__mypyc``, at the top level; Python imports an extension before its source.
Nothing extra is needed at run time.

Why: the speed targets. Measured on this project's machine (``bench/``), pure -> compiled:
ETF decoding 3.3x -> 1.6x the stdlib ``json.loads`` of the same data (target 2x); the codec
layer over its floor 1.03 -> 1.01 for zlib-stream + JSON and 1.06-1.08 -> 1.02 for zstd-stream
+ JSON (target 1.05); TCP reads to dispatch events 1.14-1.20 -> 1.08-1.10 the floor (aiohttp's
C reader + zlib + orjson; target 1.10). Why mypyc rather than hand-written C (or erlpack): mypyc
translates the same type-checked source the pure build runs, so there is one implementation to
review and to test (tests/test_compiled_build.py runs the codec and websocket suites against a
compiled copy; tests/test_etf_compiled.py compares the ETF codecs directly), and the C it
generates is checked: every ``data[pos]`` is bounds-checked (IndexError, never a read past the
buffer), values are type-checked where the annotations say, reference counts are generated
rather than kept by hand. A hostile length or a truncated term stays a ``DecodeError``. What
the generated C does not check is the depth of its own recursion: ETF nesting is bounded by
``MAX_DEPTH``, and each level costs C stack (see tests/test_etf_compiled.py). The core
(``_connection.py``) is not compiled: mypyc turns its documented ``LocalProtocolError`` for a
wrong-typed argument into a ``TypeError``, and compiling it gained little once the rest was.

``--no-build-isolation`` makes the build use the mypy and attrs installed where pip runs; an
isolated build has only setuptools, so the variable without mypyc is an error, not a silent
pure build. mypy reads the modules these pull in with ``--follow-imports=silent``: only the
listed modules are compiled, so only their own type errors may stop the build. An editable
install with the variable is refused: the extensions would land beside the sources in the
tree and hide every later edit of them.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

#: What is compiled, and the mypy flags (tests/test_compiled_build.py compiles them the same way).
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


def ext_modules() -> list[object]:
    """The mypyc extensions when ``GATEWAY_PROTO_COMPILE=1``; otherwise none."""
    if os.environ.get("GATEWAY_PROTO_COMPILE", "") != "1":
        return []
    if any(command in sys.argv for command in ("editable_wheel", "develop")):
        sys.exit(
            "GATEWAY_PROTO_COMPILE=1 is not supported with an editable install: the compiled "
            "modules would sit in the source tree and shadow their sources. "
            "Use a regular install: GATEWAY_PROTO_COMPILE=1 pip install --no-build-isolation ."
        )
    try:
        from mypyc.build import mypycify  # noqa: PLC0415 - mypy is not a build requirement
    except ImportError:
        sys.exit(
            "GATEWAY_PROTO_COMPILE=1 needs mypyc in the build environment: "
            "pip install mypy 'setuptools>=77' attrs, then "
            "GATEWAY_PROTO_COMPILE=1 pip install --no-build-isolation ."
        )
    return list(mypycify([*COMPILED_MODULES, *MYPY_FLAGS], opt_level="3", group_name=GROUP_NAME))


setup(ext_modules=ext_modules())
