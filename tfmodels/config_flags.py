"""absl flags generated from a config dataclass, so a binary stays `flags -> config -> library`.

Each field becomes a flag of the same name, type and default, with the help text of its
`option(default, help, choices)` (`metadata={"help": ..., "choices": ...}`); a field without a
help text is an error, so `--help` never shows a placeholder. A str field with `choices` (a
tuple, or a callable giving one when the flags are defined, e.g. the registered tasks) becomes
an enum flag: absl refuses any other value before the binary starts. Tuples become
comma-separated list flags whose items are parsed to the tuple's type (`Tuple[int, ...]`: ints,
a bad item is a flag error naming it), so a config gets values of its own types; an `AutoBool`
field becomes a bool flag that also takes `auto`.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, Literal, Type, Union

from absl import flags

# A setting that is on, off, or chosen at run time ("auto"; tfmodels.precision decides).
AutoBool = Union[bool, Literal["auto"]]


class AutoBoolParser(flags.ArgumentParser):
    """absl's boolean spellings (true/t/1, false/f/0, any case) plus "auto"."""

    def parse(self, argument):
        if isinstance(argument, bool) or argument == "auto":
            return argument
        if isinstance(argument, str) and argument.lower() == "auto":
            return "auto"
        try:
            return flags.BooleanParser().parse(argument)
        except (TypeError, ValueError):
            raise ValueError(f"expected true, false or auto, got {argument!r}") from None

    def flag_type(self) -> str:
        return "bool or auto"


class AutoBoolFlag(flags.Flag):
    """A boolean flag (`--name`, `--noname`, `--name=false`) that also takes `--name=auto`.

    absl treats a flag with `boolean=True` as valueless, so `--name` alone still means true
    and `--noname` false; only the `=` form passes a value (`--name auto` would not)."""

    def __init__(self, name: str, default: Any, help_string: str):
        super().__init__(AutoBoolParser(), None, name, default, help_string, boolean=True)

    def _serialize(self, value) -> str:
        if value == "auto":
            return f"--{self.name}=auto"
        return super()._serialize(value)

    def _get_parsed_value_as_string(self, value):
        if value == "auto":
            return repr("auto")
        return super()._get_parsed_value_as_string(value)


class TypedListParser(flags.ListParser):
    """absl's comma-separated list, each item parsed as `item_type` (int, float or str)."""

    def __init__(self, item_type: type):
        super().__init__()
        self.item_type = item_type

    def parse(self, argument):
        items = super().parse(argument)
        try:
            return [self.item_type(item) for item in items]
        except (TypeError, ValueError):
            raise ValueError(f"expected a comma-separated list of {self.item_type.__name__}s, "
                             f"got {argument!r}") from None

    def flag_type(self) -> str:
        return f"comma separated list of {self.item_type.__name__}s"


def option(default: Any, help: str, choices: Any = None) -> Any:  # noqa: A002 (absl's word)
    """A config field with its flag's help text (and its allowed values, for a str field)."""
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    return dataclasses.field(default=default, metadata=metadata)


def DEFINE_auto_bool(name: str, default: Any, help_text: str,  # noqa: N802 (absl's style)
                     flag_values=flags.FLAGS) -> None:
    flags.DEFINE_flag(AutoBoolFlag(name, default, help_text), flag_values)


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
        help_text = field.metadata.get("help")
        if not help_text:
            raise TypeError(f"{config_cls.__name__}.{field.name} has no help text: define it "
                            "with tfmodels.config_flags.option(default, help)")
        field_type = _base_type(field, config_cls)
        choices = field.metadata.get("choices")
        if callable(choices):
            choices = choices()
        if choices is not None:
            # A default outside the set ('' for "not given") becomes an unset flag.
            flags.DEFINE_enum(field.name, default if default in choices else None,
                              list(choices), help_text, flag_values=flag_values)
        elif field_type == AutoBool:
            DEFINE_auto_bool(field.name, default, help_text, flag_values=flag_values)
        elif field_type is bool:
            flags.DEFINE_bool(field.name, default, help_text, flag_values=flag_values)
        elif field_type is int:
            flags.DEFINE_integer(field.name, default, help_text, flag_values=flag_values)
        elif field_type is float:
            flags.DEFINE_float(field.name, default, help_text, flag_values=flag_values)
        elif typing.get_origin(field_type) is tuple:
            item_type = (typing.get_args(field_type) or (str,))[0]
            flags.DEFINE(TypedListParser(item_type if item_type in (int, float) else str),
                         field.name, list(default), help_text, flag_values=flag_values,
                         serializer=flags.CsvListSerializer(","))
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
            if value is None and field.metadata.get("choices") is not None:
                continue  # an unset enum flag: the field's own default
            values[field.name] = value
    return config_cls(**values)
