"""The version of gateway_proto, written here and nowhere else.

``pyproject.toml`` reads it at build time (``[tool.setuptools.dynamic]``); the package's
``__version__``, the websocket ``User-Agent`` and ``gateway-proto --version`` import it.
"""

from __future__ import annotations

from typing import Final

__version__: Final = "0.1.0"
