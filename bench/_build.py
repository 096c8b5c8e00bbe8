"""Which build of gateway_proto a benchmark measures: pure Python, or the compiled hot path.

A regular install compiles the hot-path modules with mypyc where it can (setup.py); an
editable one, or ``GATEWAY_PROTO_NO_COMPILE=1``, is pure Python. Every benchmark prints this
line so its figures say which build they are of.
"""

from __future__ import annotations

import importlib
from importlib.machinery import EXTENSION_SUFFIXES

#: The modules setup.py compiles (keep in step with its COMPILED_MODULES).
HOT_PATH = [
    "gateway_proto.ws._frames",
    "gateway_proto._codecs",
    "gateway_proto._codecs._zlib",
    "gateway_proto._codecs._zstd",
    "gateway_proto._codecs._etf",
]


def describe() -> str:
    """One line: ``pure Python`` or which hot-path modules are compiled extensions."""
    compiled = [
        name
        for name in HOT_PATH
        if str(importlib.import_module(name).__file__).endswith(tuple(EXTENSION_SUFFIXES))
    ]
    if not compiled:
        return "gateway_proto build: pure Python"
    if len(compiled) == len(HOT_PATH):
        return "gateway_proto build: compiled hot path (mypyc)"
    return f"gateway_proto build: partly compiled ({', '.join(compiled)})"
