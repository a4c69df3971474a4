"""Command-line options made from a config dataclass: the config's field help is the help the CLI shows.

    @config_command(train_app, "pretrain", "training.config:PretrainConfig")
    def train_pretrain_command(dataset: DatasetOption, ..., settings: ConfigSettings) -> None:
        config = load_config(PretrainConfig, config_file, **settings)

Every field whose metadata has "help" becomes one option, after the command's own:

- the flag is `--field-name`, or the field's `metadata["flag"]` (`"--rank"`); a bool field is an
  on/off pair (`--compile/--no-compile`, or its `metadata["flag"]`, e.g.
  `"--assistant-only-loss/--full-loss"`);
- its type is the field's (int, float, str, bool; `X | None` as X); a `tuple[str, ...]` field
  takes one comma-separated value (`--target-modules q_proj,v_proj`);
- its help is the field's, ending in "(default: ...)" from the dataclass itself (a field with a
  default_factory, or an empty default, says nothing: its help explains it);
- it has no default of its own: `settings` holds only the options given (as the field's
  type), so a config file, then the flags, override the dataclass's defaults.

The config class is named as "module:Class" and imported only when that command's options
are needed (its own --help, or running it): typer builds every command when `satsang` starts,
and a config living beside polars or torch would otherwise slow down every `satsang --help`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand

# What the command receives: field name -> value, for the options given on the command line only.
ConfigSettings = Mapping[str, Any]

CONFIG_SPEC = "satsang_config_spec"  # the attribute on a command's function that names its config
_given: ContextVar[dict[str, Any]] = ContextVar("satsang_config_settings")


@dataclasses.dataclass(frozen=True)
class ConfigSpec:
    """Which config a command's options come from, and the parameter that receives them."""

    config: str  # "module:Class"
    into: str  # the command function's parameter that gets the settings

    def config_class(self) -> type:
        module, _, name = self.config.partition(":")
        return getattr(importlib.import_module(module), name)


@dataclasses.dataclass(frozen=True)
class ConfigOption:
    """One field as an option: the typer declaration and how a given value becomes the field's."""

    name: str
    annotation: Any  # Annotated[Optional[T], typer.Option(...)]
    to_field: Callable[[Any], Any]


def option_of_field(spec: dataclasses.Field, field_type: Any) -> ConfigOption:
    """The option for one config field (see the module docstring)."""
    kind, _ = _strip_optional(field_type)
    metadata = spec.metadata
    flag = metadata.get("flag") or "--" + spec.name.replace("_", "-")
    to_field: Callable[[Any], Any] = _same
    metavar = metadata.get("metavar")
    if kind is bool:
        if "/" not in flag:
            flag = f"{flag}/--no-{flag.removeprefix('--')}"
    elif typing.get_origin(kind) is tuple:
        kind, to_field, metavar = str, _comma_separated, metavar or "A,B,..."
    elif kind not in (int, float, str):
        raise TypeError(f"{spec.name}: a {field_type} field cannot be an option (int, float, str, bool or tuple[str, ...])")
    from rich.markup import escape  # the help is plain text; typer reads it as rich markup, where "[x]" is a tag

    help_text = escape(metadata["help"] + _default_text(spec, kind))
    option = typer.Option(flag, help=help_text, show_default=False, metavar=metavar)
    return ConfigOption(spec.name, Annotated[Optional[kind], option], to_field)


def config_options(config_class: type) -> list[ConfigOption]:
    """The options of every field of `config_class` that has help, in field order."""
    hints = typing.get_type_hints(config_class)
    return [option_of_field(spec, hints[spec.name]) for spec in dataclasses.fields(config_class) if "help" in spec.metadata]


class ConfigCommand(TyperCommand):
    """A typer command whose config options are built on first use, from the spec on its function.

    click reads a command's options from its `params` list; this one adds the config's the
    first time the list is read, which is when this command parses its arguments or shows its
    help, never when `satsang` lists its commands.
    """

    def __init__(self, *args: Any, callback: Callable[..., Any] | None = None, **kwargs: Any) -> None:
        unwrapped = inspect.unwrap(callback, stop=lambda f: hasattr(f, CONFIG_SPEC)) if callback else None
        self.config_spec: ConfigSpec = getattr(unwrapped, CONFIG_SPEC)
        self.config_fields: dict[str, ConfigOption] | None = None
        super().__init__(*args, callback=self._with_settings(callback), **kwargs)

    @property
    def params(self) -> list[Any]:
        if self.config_fields is None:
            options = config_options(self.config_spec.config_class())
            taken = {param.name for param in self._params}
            if clash := sorted(taken & {option.name for option in options}):
                raise TypeError(f"{self.name}: its own parameters {', '.join(clash)} are also fields of {self.config_spec.config}")
            self.config_fields = {option.name: option for option in options}
            self._params.extend(_typer_params(options))  # in place: click appends to and pops from this very list
        return self._params

    @params.setter
    def params(self, value: list[Any]) -> None:
        self._params = list(value)

    def _with_settings(self, callback: Callable[..., Any] | None) -> Callable[..., Any] | None:
        if callback is None:
            return None

        def with_settings(**kwargs: Any) -> Any:
            fields = self.config_fields or {}
            given = {name: fields[name].to_field(kwargs.pop(name)) for name in list(kwargs) if name in fields and kwargs[name] is not None}
            for name in fields:
                kwargs.pop(name, None)
            token = _given.set(given)
            try:
                return callback(**kwargs)
            finally:
                _given.reset(token)

        return with_settings


def config_command(app: typer.Typer, name: str | None, config: str, *, into: str = "settings", **command: Any) -> Callable:
    """Register the decorated function as `app`'s command `name`, with one option per field of `config` ("module:Class").

    The function takes the given options as a mapping in its parameter `into` (see the module docstring).
    """

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(function, eval_str=True)
        if into not in signature.parameters:
            raise TypeError(f"{function.__name__} needs a parameter {into!r} for the settings of {config}")
        own = [p for p in signature.parameters.values() if p.name != into]

        def command_function(**kwargs: Any) -> Any:
            return function(**kwargs, **{into: _given.get({})})

        command_function.__name__ = function.__name__
        command_function.__qualname__ = function.__qualname__
        command_function.__doc__ = function.__doc__
        command_function.__module__ = function.__module__
        command_function.__signature__ = signature.replace(parameters=own)  # type: ignore[attr-defined]
        command_function.__annotations__ = {p.name: p.annotation for p in own}
        setattr(command_function, CONFIG_SPEC, ConfigSpec(config, into))
        app.command(name, cls=ConfigCommand, **command)(command_function)
        return function

    return register


def _typer_params(options: list[ConfigOption]) -> list[Any]:
    """click parameters for the options, made by typer itself from a function that declares them."""

    def declared(**kwargs: Any) -> None:
        """The config options."""

    declared.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=o.annotation) for o in options]
    )
    scratch = typer.Typer(add_completion=False)
    scratch.command()(declared)
    return list(typer.main.get_command(scratch).params)


def _strip_optional(field_type: Any) -> tuple[Any, bool]:
    arguments = typing.get_args(field_type)
    if type(None) in arguments and len(arguments) == 2:
        return next(a for a in arguments if a is not type(None)), True
    return field_type, False


def _default_text(spec: dataclasses.Field, kind: Any) -> str:
    default = spec.default
    if default is dataclasses.MISSING or default is None or default in ((), ""):
        return ""  # a default_factory (e.g. from the environment) or nothing: the help says what happens
    if kind is bool:
        return f" (default: {'on' if default else 'off'})"
    if isinstance(default, tuple):
        return f" (default: {','.join(map(str, default))})"
    if isinstance(default, float):
        return f" (default: {default:g})"
    return f" (default: {default})"


def _same(value: Any) -> Any:
    return value


def _comma_separated(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())
