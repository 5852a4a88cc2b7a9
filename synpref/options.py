"""Command-line options built from a command's config model: one option per field, help written
once (the field's description), `--config FILE.yaml` and `--set key=value` on every command.

Precedence: flags > `--set` > the `--config` file > the model's defaults. A field's CLI spelling
lives beside it: `cli(flags=["--json"])` or `cli(argument=True)` in `json_schema_extra`; nested
models and dicts have no flag and are reached through `--config` and `--set`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel

from synpref.config import load_yaml, set_dotted, validated
from synpref.errors import SynprefError

if TYPE_CHECKING:
    import typer

CONFIG_HELP = "YAML file of this command's options (flags and --set win)"
SET_HELP = "override an option, KEY=VALUE (dotted for nested ones), e.g. {example}"


def cli(*, flags: list[str] | None = None, argument: bool = False, secret: bool = False) -> dict[str, Any]:
    """How a field is spelled on the command line, for `Field(json_schema_extra=cli(...))`:
    its flags, or a positional argument; `secret`: asked for (twice, hidden) when not given."""
    return {"cli": {"flags": flags, "argument": argument, "secret": secret}}


@dataclass
class Option:
    """One command-line option: the field it sets, its flags and what typer parses."""

    name: str
    kind: Any
    default: Any
    help: str
    flags: list[str]
    argument: bool
    required: bool
    secret: bool = False


def options_of(model: type[BaseModel], flags: dict[str, list[str]] | None = None) -> list[Option]:
    """The command-line options of `model`, in field order (`flags` overrides a field's spelling)."""
    found = []
    for name, info in model.model_fields.items():
        kind = _plain(info.annotation)
        if kind is None:
            continue  # nested model or mapping: --config and --set only
        spelling = (info.json_schema_extra or {}).get("cli", {}) if isinstance(info.json_schema_extra, dict) else {}
        flag = "--" + name.replace("_", "-")
        decls = (flags or {}).get(name) or spelling.get("flags") or ([f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag])
        default = info.get_default(call_default_factory=True)
        found.append(Option(name, kind, default, info.description or "", decls, spelling.get("argument", False),
                            info.is_required(), spelling.get("secret", False)))  # fmt: skip
    return found


def _plain(annotation: Any) -> Any:
    """The type typer parses for a field (Optional[x] -> x, Literal -> str, list[x] stays), or None."""
    origin = get_origin(annotation)
    if origin is Union:
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _plain(args[0]) if len(args) == 1 else None
    if origin is Literal:
        return str
    if origin is list:
        item = get_args(annotation)[0]
        return list[item] if item in (str, Path, int, float) else None
    if annotation in (str, int, float, bool, Path):
        return annotation
    return None


def shown_default(option: Option) -> str | bool:
    """The default `--help` shows: the model's (flags themselves default to "not given")."""
    if option.required or option.default is None or option.default == []:
        return False
    return str(option.default)


def command(
    group: typer.Typer,
    name: str,
    model: type[BaseModel],
    *,
    flags: dict[str, list[str]] | None = None,
    set_example: str = "",
    config_help: str = CONFIG_HELP,
    default_config: Callable[[dict[str, Any]], Path | None] | None = None,
) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register `run(options)` as `name` in `group`, with options built from `model` (`flags`
    overrides fields' spellings; `default_config(flags given)`: the YAML file read without --config)."""

    def register(run: Callable[[Any], Any]) -> Callable[[Any], Any]:
        import typer

        options = options_of(model, flags)
        parameters = [_parameter(option) for option in options if option.argument]
        parameters += [_parameter(option) for option in options if not option.argument]
        parameters += [
            inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=Annotated[Optional[Path], typer.Option("--config", help=config_help)]),
            inspect.Parameter("set", inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=Annotated[Optional[list[str]], typer.Option("--set", help=SET_HELP.format(example=set_example or _example(options)))]),
        ]  # fmt: skip

        def callback(**given: Any) -> Any:
            config = given.pop("config")
            if config is None and default_config is not None:
                config = default_config(given)
            return callback.run(resolve(model, config, given.pop("set") or [], given))

        callback.__signature__ = inspect.Signature(parameters)
        callback.__doc__ = run.__doc__
        callback.__name__ = run.__name__
        callback.model = model
        callback.flags = flags
        callback.run = run
        group.command(name)(callback)
        return run

    return register


def resolve(model: type[BaseModel], config: Path | None, overrides: list[str], given: dict[str, Any]) -> BaseModel:
    """The command's options: defaults < the `config` YAML < `overrides` < flags given."""
    values = load_yaml(config, f"{config}: cannot read the options file") or {} if config is not None else {}
    if not isinstance(values, dict):
        raise SynprefError(f"{config}: expected a mapping of option names to values")
    for override in overrides:
        set_dotted(values, override)
    values.update({key: value for key, value in given.items() if value is not None and value != []})
    return validated(model, values, str(config) if config is not None else "options")


def _parameter(option: Option) -> inspect.Parameter:
    import typer

    kind = option.kind
    if option.argument:
        spec = typer.Argument(help=option.help, show_default=shown_default(option))
        default = inspect.Parameter.empty if option.required else option.default
        return inspect.Parameter(option.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=Annotated[kind, spec])
    secret = {"prompt": True, "hide_input": True, "confirmation_prompt": True} if option.secret else {}
    spec = typer.Option(*option.flags, help=option.help, show_default=shown_default(option), **secret)
    default = inspect.Parameter.empty if option.required else None
    annotation = Annotated[kind if option.required else Optional[kind], spec]
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _example(options: list[Option]) -> str:
    option = next((o for o in options if not o.argument and not o.required and o.kind in (int, float)), None)
    return f"{option.name}={option.default}" if option else "KEY=VALUE"
