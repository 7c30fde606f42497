"""Packages that import their public names on first use (PEP 562), so a light import stays light.

`projections` and `replay` re-export names from modules that load DuckDB and pyarrow (about a
quarter of a second). The `lmg` CLI lives inside `replay` and imports from `projections`, so
with eager re-exports even `lmg --help` would pay for both. `export_lazily` turns a package's
re-exports into lookups: the module that defines a name is imported when the name is first
read, and the name is then bound on the package like an ordinary import.

One trap is closed here: when a submodule is imported, Python binds it on its package under
its own name, which would hide a function of the same name (`replay.diff`, the function, and
`replay/diff.py`). A lazy package binds the function instead.
"""

from __future__ import annotations

import importlib
import sys
import types

__all__ = ["export_lazily"]


class _LazyPackage(types.ModuleType):
    """A package module whose missing public names are imported from their modules."""

    _lazy_sources: dict[str, str]

    def __getattr__(self, name: str) -> object:
        module = self.__dict__["_lazy_sources"].get(name)
        if module is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, self.__name__), name)
        setattr(self, name, value)
        return value

    def __setattr__(self, name: str, value: object) -> None:
        sources = self.__dict__.get("_lazy_sources", {})
        if isinstance(value, types.ModuleType) and sources.get(name) == f".{name}":
            value = getattr(value, name)  # the import system binding `diff.py` over `diff`
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*self.__dict__, *self.__dict__["_lazy_sources"]})


def export_lazily(package: str, sources: dict[str, tuple[str, ...]]) -> None:
    """Make `package` import each name of `sources` (relative module -> names) on first use."""
    module = sys.modules[package]
    module.__class__ = _LazyPackage
    lazy: dict[str, str] = {name: source for source, names in sources.items() for name in names}
    module.__dict__["_lazy_sources"] = lazy
