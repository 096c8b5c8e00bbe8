"""What every fuzz harness here shares: optional atheris, its instrumentation, the input
reader, the failure type and the entry point.

Each harness imports this module by file location (its folder is put on ``sys.path``), so a
harness runs the same as a script under atheris and when a test loads it by path.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable
from typing import Any

atheris: Any
try:
    atheris = importlib.import_module("atheris")
except ImportError:  # harnesses still import, and their run_one still runs, without atheris
    atheris = None


class HarnessFailure(AssertionError):
    """An outcome the contract does not allow."""


def instrumentation(caller: str) -> contextlib.AbstractContextManager[Any]:
    """Instrument gateway_proto's imports, only when atheris runs ``caller`` as a script."""
    if atheris is not None and caller == "__main__":
        hooks: contextlib.AbstractContextManager[Any] = atheris.instrument_imports(
            include=["gateway_proto"]
        )
        return hooks
    return contextlib.nullcontext()


class Reader:
    """Consumes the fuzzer's bytes as a little program; reads past the end give zeros."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def more(self) -> bool:
        return self._pos < len(self._data)

    def byte(self) -> int:
        if self._pos >= len(self._data):
            return 0
        value = self._data[self._pos]
        self._pos += 1
        return value

    def u16(self) -> int:
        return self.byte() | (self.byte() << 8)

    def chunk(self, limit: int = 255) -> bytes:
        size = min(self.byte(), limit)
        piece = self._data[self._pos : self._pos + size]
        self._pos += len(piece)
        return piece

    def text(self, limit: int = 255) -> str:
        return self.chunk(limit).decode("utf-8", "surrogateescape")


def fuzz_main(test_one_input: Callable[[bytes], None]) -> None:
    """Run ``test_one_input`` under atheris with the command line's options."""
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris (see fuzz/README.md)")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
