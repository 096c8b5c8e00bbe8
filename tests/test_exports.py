"""The public exports: every module a user imports says what it offers in ``__all__``.

For each public module: every name in ``__all__`` exists, none is listed twice, the list is
in the order ruff's RUF022 keeps (constants, then classes, then the rest, each alphabetical),
and every public name the module defines — or takes from its own private submodules, as a
package re-exports its implementation — is listed. Names imported from elsewhere (another
module of the project, ``typing``, a library) are not the module's to export.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

import gateway_proto.adapters
import pytest

PUBLIC_MODULES = [
    "gateway_proto",
    "gateway_proto.payloads",
    "gateway_proto.ws",
    "gateway_proto.testing",
    "gateway_proto.testing.strategies",
    *sorted(
        f"gateway_proto.adapters.{info.name}"
        for info in pkgutil.iter_modules(gateway_proto.adapters.__path__)
        if not info.name.startswith("_")
    ),
]


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # an optional dependency (trio, hypothesis) is missing
        pytest.skip(f"{name} cannot be imported here: {exc}")


def _ruf022_key(name: str) -> tuple[int, str]:
    """RUF022's isort-style order: SCREAMING_CASE, then CamelCase, then everything else."""
    if len(name) > 1 and name.upper() == name and name.lower() != name:
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


def _defined_at_top_level(module: ModuleType) -> set[str]:
    """Names the module's own source binds at top level (def, class, assignment)."""
    source = Path(inspect.getfile(module)).read_text(encoding="utf-8")
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _public_names(module: ModuleType) -> set[str]:
    """Public names the module defines or takes from its own private submodules."""
    own = _defined_at_top_level(module)
    private_prefix = f"{module.__name__}._"
    found = set()
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        origin = getattr(value, "__module__", None)
        from_private_submodule = isinstance(origin, str) and origin.startswith(private_prefix)
        if name in own or (from_private_submodule and hasattr(module, "__path__")):
            found.add(name)
    return found


def test_the_list_of_public_modules_is_complete():
    assert "gateway_proto.adapters.asyncio" in PUBLIC_MODULES
    assert "gateway_proto.adapters.threads" in PUBLIC_MODULES
    assert "gateway_proto.adapters.trio" in PUBLIC_MODULES


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_accurate_unique_and_sorted(name: str):
    module = _load(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__ list"
    missing = [item for item in exported if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names what the module lacks: {missing}"
    duplicates = sorted({item for item in exported if exported.count(item) > 1})
    assert not duplicates, f"{name}.__all__ lists twice: {duplicates}"
    assert exported == sorted(exported, key=_ruf022_key), f"{name}.__all__ is not in RUF022 order"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_name_is_exported(name: str):
    module = _load(name)
    unexported = sorted(_public_names(module) - set(module.__all__))
    assert not unexported, f"{name} defines public names missing from __all__: {unexported}"


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("gateway_proto.adapters.asyncio", "DiscoveryError"),
        ("gateway_proto.adapters.asyncio", "GatewayInfo"),
        ("gateway_proto.adapters.trio", "DiscoveryError"),
        ("gateway_proto.adapters.trio", "GatewayInfo"),
        ("gateway_proto.adapters.threads", "DiscoveryError"),
        ("gateway_proto.adapters.threads", "GatewayInfo"),
    ],
)
def test_what_discover_gateway_raises_and_returns_is_exported(module: str, name: str):
    """``discover_gateway`` raises ``DiscoveryError`` and returns ``GatewayInfo``: both public."""
    loaded = _load(module)
    assert name in loaded.__all__
    assert getattr(loaded, name) is getattr(
        importlib.import_module("gateway_proto.adapters._common"), name
    )


def test_the_version_is_written_once():
    import tomllib

    from gateway_proto import __version__
    from gateway_proto.ws import DEFAULT_USER_AGENT

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    module_name, _, variable = attr.rpartition(".")
    assert getattr(importlib.import_module(module_name), variable) == __version__
    assert DEFAULT_USER_AGENT.endswith(f", {__version__})")
    written = [
        path.relative_to(root).as_posix()
        for folder in ("gateway_proto", "adapters")
        for path in (root / folder).rglob("*.py")
        if f'"{__version__}"' in path.read_text(encoding="utf-8")
    ]
    assert written == ["gateway_proto/_version.py"]
