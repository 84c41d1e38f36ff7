"""absl flags generated from a config dataclass, so a binary stays `flags -> config -> library`.

Each field becomes a flag of the same name, type and default, with the help text taken from the
comment-free `metadata={"help": ...}` of the field when it has one. Tuples of strings become
list flags.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, Type

from absl import flags


def _base_type(field: dataclasses.Field, owner: Type) -> Any:
    hints = typing.get_type_hints(owner)
    return hints.get(field.name, type(field.default))


def define_flags_from_dataclass(config_cls: Type, flag_values=flags.FLAGS,
                                skip: tuple = ()) -> None:
    """Defines one flag per field of `config_cls` (skipping names in `skip`)."""
    for field in dataclasses.fields(config_cls):
        if field.name in skip:
            continue
        default = (field.default if field.default is not dataclasses.MISSING
                   else field.default_factory())  # type: ignore[misc]
        help_text = field.metadata.get("help", f"{config_cls.__name__}.{field.name}")
        kind = _base_type(field, config_cls)
        if kind is bool:
            flags.DEFINE_bool(field.name, default, help_text, flag_values=flag_values)
        elif kind is int:
            flags.DEFINE_integer(field.name, default, help_text, flag_values=flag_values)
        elif kind is float:
            flags.DEFINE_float(field.name, default, help_text, flag_values=flag_values)
        elif typing.get_origin(kind) is tuple:
            flags.DEFINE_list(field.name, list(default), help_text, flag_values=flag_values)
        else:
            flags.DEFINE_string(field.name, default, help_text, flag_values=flag_values)


def dataclass_from_flags(config_cls: Type, flag_values=flags.FLAGS, **overrides):
    """Builds `config_cls` from the parsed flags defined by `define_flags_from_dataclass`."""
    values: Dict[str, Any] = {}
    for field in dataclasses.fields(config_cls):
        if field.name in overrides:
            values[field.name] = overrides[field.name]
        elif field.name in flag_values:
            value = flag_values[field.name].value
            if typing.get_origin(_base_type(field, config_cls)) is tuple:
                value = tuple(value or ())
            values[field.name] = value
    return config_cls(**values)
