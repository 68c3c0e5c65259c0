"""Dagster run config derived from the library's dataclasses, so a setting is declared once.

``router``/``collectors`` describe their settings as dataclasses (no Dagster there); the Launchpad needs
``dg.Config`` classes. :func:`config_from` builds one from the dataclasses' fields (same names, defaults
and comments-as-descriptions), and :meth:`DataclassConfig.build` turns a run's values back into the
dataclass, so the asset and the library can never drift apart.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

import dagster as dg
from pydantic import Field, create_model

T = TypeVar("T")


class DataclassConfig(dg.Config):
    """Base of the derived config classes: rebuilds the library dataclasses from run values."""

    def build(self, cls: type[T], **overrides: Any) -> T:
        """The dataclass ``cls`` from this config's fields of the same name (lists back to tuples)."""
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in overrides:
                values[f.name] = overrides[f.name]
            elif f.name in type(self).model_fields:
                v = getattr(self, f.name)
                values[f.name] = tuple(v) if isinstance(v, list) and _is_tuple(hints[f.name]) else v
        return cls(**values)


def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple or any(typing.get_origin(a) is tuple for a in typing.get_args(tp))


def _config_type(tp: Any) -> Any:
    """Dagster config has lists, not tuples: ``tuple[X, ...]`` (optionally ``| None``) becomes ``list[X]``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        return list[args[0]]
    if origin in (typing.Union, types.UnionType):
        inner = [_config_type(a) for a in args if a is not type(None)]
        return inner[0] | None if len(inner) == 1 and type(None) in args else tp
    return tp


def config_from(name: str, *sources: type, exclude: tuple[str, ...] = (), doc: str = "",
                defaults: dict[str, Any] | None = None,
                descriptions: dict[str, str] | None = None) -> type[DataclassConfig]:
    """A ``dg.Config`` subclass with every field of the dataclasses ``sources`` (first one wins on clashes);
    ``defaults`` replaces a library default where the asset's use differs (say why at the call)."""
    fields: dict[str, Any] = {}
    defaults, descriptions = defaults or {}, descriptions or {}
    for src in sources:
        hints = typing.get_type_hints(src)
        for f in dataclasses.fields(src):
            if f.name in exclude or f.name in fields:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            default = defaults.get(f.name, default)
            if isinstance(default, tuple):
                default = list(default)
            fields[f.name] = (_config_type(hints[f.name]),
                              Field(default=default, description=descriptions.get(f.name)))
    model = create_model(name, __base__=DataclassConfig, __doc__=doc or None, **fields)
    return model
