"""Type checks of config values read from YAML/JSON, by the dataclass field they go into.

YAML hands over what it parsed: `"no"` (a string, hence true), `2.5` for a count, `"8"` for a number. Without a
check these failed deep inside training or extraction with a traceback, or silently meant something else
(`allow_random_weights: "no"` allowed random weights). Used by the model config (models/config.py) and the
extraction config (extractors/config.py).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import types
import typing
from typing import Any


def check_value(value: Any, kind: Any, where: str, *, coerce: bool = False) -> Any:
    """``value`` if it fits the annotation ``kind`` (bool, int, float, str, ``X | None``, ``list[X]``,
    ``tuple[X, ...]``, a dataclass), else ValueError naming ``where``. An int fits a float field, and numpy
    scalars fit; with ``coerce`` numbers come back as plain Python int/float (JSON-serialisable). Lists and
    tuples are interchangeable (YAML has lists only)."""
    def bad(what: str) -> ValueError:
        shown = repr(value)
        return ValueError(f"{where}: must be {what}, got {shown if len(shown) <= 60 else shown[:57] + '...'}")

    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return check_value(value, option, where, coerce=coerce)
            except ValueError:
                continue
        raise bad(" or ".join(_name(o) for o in options))
    if kind is bool:  # (numpy's bool too: a Python caller's np.bool_)
        if not (isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"):
            raise bad("true or false")
        return bool(value) if coerce else value
    if kind is int:  # (numbers.Integral: numpy integers from Python callers count too)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise bad("an integer")
        return int(value) if coerce else value
    if kind is float:
        try:
            finite = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
        except OverflowError:  # (an integer of hundreds of digits)
            finite = False
        if not finite:
            raise bad("a finite number")
        return float(value) if coerce else value
    if kind is str:  # (a path object too: a Python caller's weights_dir=Path(...))
        if not isinstance(value, (str, os.PathLike)):
            raise bad("a string")
        return os.fspath(value) if coerce else value
    if origin in (list, tuple):  # (YAML gives lists; Python callers also sets and numpy arrays)
        if isinstance(value, (set, frozenset)):
            value = list(value)
        elif not isinstance(value, (list, tuple)) and hasattr(value, "tolist"):
            value = value.tolist()  # (a 0-d array gives a scalar: refused below)
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        if len(args) == 1:
            return type(value)(check_value(v, args[0], f"{where}[{i}]", coerce=coerce)
                               for i, v in enumerate(value))
        return value
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, kind):
            raise bad(f"a mapping of {kind.__name__} settings")
        return value
    return value


def check_fields(obj: Any, where: str) -> None:
    """Every field of the dataclass instance ``obj`` fits its annotation (see :func:`check_value`)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        check_value(getattr(obj, f.name), hints[f.name], f"{where}.{f.name}" if where else f.name)


def _name(kind: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
            type(None): "unset (null)"}.get(kind, getattr(kind, "__name__", str(kind)))
