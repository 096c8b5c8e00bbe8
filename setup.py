"""Optional compiled build of the ETF codec; every piece of metadata lives in pyproject.toml.

By default this file adds nothing: ``pip install .`` and ``pip install -e '.[dev]'`` build
the same pure-Python wheel as without it, on a machine with only Python and pip.

With ``GATEWAY_PROTO_COMPILE=1`` set at build time, ``gateway_proto/_codecs/_etf.py`` is
compiled to a C extension with mypyc (the rest of the package stays pure Python)::

    pip install mypy 'setuptools>=77' attrs    # mypyc, and what mypy needs to read the package
    GATEWAY_PROTO_COMPILE=1 pip install --no-build-isolation .

The wheel then holds ``gateway_proto/_codecs/_etf.*.so`` (and its ``_etf__mypyc`` library)
next to ``_etf.py``; Python imports the extension first. Nothing extra is needed at run time.

Why: the wire-formats issue targets ETF decoding within 2x of the stdlib ``json.loads`` of the
same data. The pure decoder is about 3.3-3.9x on ``bench/bench_decode.py``'s stream; the same
source compiled by mypyc is about 1.9x. Why mypyc rather than a hand-written C parser (or
erlpack): mypyc translates the same type-checked source the pure build runs, so there is one
decoder to review and to test (tests/test_etf_compiled.py checks the two agree), and the C it
generates is checked: every ``data[pos]`` is bounds-checked (IndexError, never a read past the
buffer), values are type-checked where the annotations say, reference counts are generated
rather than kept by hand. A hostile length or a truncated term stays a ``DecodeError``. What
the generated C does not check is the depth of its own recursion: nesting is bounded by
``MAX_DEPTH``, and each level costs C stack (see tests/test_etf_compiled.py).

``--no-build-isolation`` makes the build use the mypy and attrs installed where pip runs; an
isolated build has only setuptools, so the variable without mypyc is an error, not a silent
pure build. mypy reads the modules ``_etf.py`` pulls in (the package ``__init__`` imports the
optional codecs) with ``--follow-imports=silent``: only ``_etf.py`` is compiled, so only its
own type errors may stop the build. An editable install with the variable is refused: the
extension would land beside ``_etf.py`` in the source tree and hide every later edit of it.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

#: What is compiled, and the mypy flags (tests/test_etf_compiled.py compiles it the same way).
COMPILED_MODULES = ["gateway_proto/_codecs/_etf.py"]
MYPY_FLAGS = ["--follow-imports=silent"]


def ext_modules() -> list[object]:
    """The mypyc extensions when ``GATEWAY_PROTO_COMPILE=1``; otherwise none."""
    if os.environ.get("GATEWAY_PROTO_COMPILE", "") != "1":
        return []
    if any(command in sys.argv for command in ("editable_wheel", "develop")):
        sys.exit(
            "GATEWAY_PROTO_COMPILE=1 is not supported with an editable install: the compiled "
            "_etf would sit in the source tree and shadow gateway_proto/_codecs/_etf.py. "
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
    return list(mypycify([*COMPILED_MODULES, *MYPY_FLAGS], opt_level="3"))


setup(ext_modules=ext_modules())
