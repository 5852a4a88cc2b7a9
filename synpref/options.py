"""Command-line options built from a command's config model: one option per field, help written
once (the field's description), `--config FILE.yaml` and `--set key=value` on every command.

Precedence: flags > `--set` > the `--config` file > the model's defaults. A field's CLI spelling
lives beside it: `cli(flags=["--json"])` or `cli(argument=True)` in `json_schema_extra`; nested
models and dicts have no flag and are reached through `--config` and `--set`.

`--help` shows each default as the model's plain value and `[required]` for what must be given;
a command that needs a pyproject extra names it (`command(..., extra=)`, `EXTRAS`) instead of
failing with an ImportError.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


# Each extra of pyproject.toml (with the extras it includes) and the modules synpref imports from
# it: a command meeting one that is missing names the extra to install.
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "starlette", "uvicorn", "prometheus_client"),
    "label": ("fastapi", "starlette", "uvicorn", "sqlalchemy", "itsdangerous", "argon2"),
    "llm": ("openai",),
    "plots": ("matplotlib", "tensorboard"),
    "curate": ("sentence_transformers", "faiss", "ray", "openai", "matplotlib", "tensorboard"),
    "llamacpp": ("xllamacpp",),
    "postgres": ("psycopg",),
}


def cli(*, flags: list[str] | None = None, argument: bool = False, secret: bool = False, required: bool = False) -> dict[str, Any]:
    """How a field is spelled on the command line, for `Field(json_schema_extra=cli(...))`:
    its flags, or a positional argument; `secret`: asked for (twice, hidden) when not given;
    `required`: must be given, by flag or `--config`, where the model's default means "not given"."""
    return {"cli": {"flags": flags, "argument": argument, "secret": secret, "required": required}}


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
    needed: bool = False  # must be given by flag or --config though not required by the flag


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
                            info.is_required(), spelling.get("secret", False), spelling.get("required", False)))  # fmt: skip
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
    """The default `--help` shows: the model's (flags themselves default to "not given"), as a
    plain value (`_Command`)."""
    if option.required or option.needed or option.default is None or option.default == []:
        return False
    return str(option.default)


class MissingExtra(Exception):
    """A command needs an extra that is not installed; the message is the one line to show."""

    def __init__(self, command: str, extra: str):
        super().__init__(f"{command} needs the {extra!r} extra: pip install 'synpref[{extra}]'")


def missing_module(error: ModuleNotFoundError) -> str | None:
    """The top-level module whose absence raised `error`, or None when it is installed (the error
    then comes from inside it)."""
    top = (error.name or "").split(".")[0]
    return top if top and importlib.util.find_spec(top) is None else None


@contextmanager
def extra_named(command: str, extra: str | None) -> Iterator[None]:
    """Run `command` (e.g. "synpref serve"), first checking its `extra`; a module of any extra
    found missing on the way becomes a `MissingExtra` naming it (the command's own extra first)."""
    if extra is not None:
        absent = next((m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None), None)
        if absent is not None:
            raise MissingExtra(command, extra)
    try:
        yield
    except ModuleNotFoundError as error:
        module = missing_module(error)
        candidates = [extra] if extra is not None else []
        found = next((name for name in [*candidates, *EXTRAS] if module in EXTRAS[name]), None)
        if found is None:
            raise
        raise MissingExtra(command, found) from None


def command(
    group: typer.Typer,
    name: str,
    model: type[BaseModel],
    *,
    flags: dict[str, list[str]] | None = None,
    set_example: str = "",
    config_help: str = CONFIG_HELP,
    default_config: Callable[[dict[str, Any]], Path | None] | None = None,
    extra: str | None = None,
) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register `run(options)` as `name` in `group`, with options built from `model` (`flags`
    overrides fields' spellings; `default_config(flags given)`: the YAML file read without --config;
    `extra`: the pyproject extra it needs, checked before it runs)."""

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
            inspect.Parameter("command_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
        ]  # fmt: skip

        def callback(**given: Any) -> Any:
            with extra_named(_command_path(given.pop("command_context")), extra):
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
        group.command(name, cls=_help_command(options))(callback)
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


def _command_path(context: Any) -> str:
    """The running command as typed, e.g. "synpref label serve" (also under `python -m synpref`)."""
    names = []
    while context.parent is not None:
        names.append(context.info_name)
        context = context.parent
    return " ".join(["synpref", *reversed(names)])


def _help_command(options: list[Option]) -> type:
    """A typer command class whose `--help` shows each default as a plain value and `[required]`
    for options that must be given by flag or --config. The flags themselves default to "not
    given" (so that --config and --set can fill them); typer would show nothing, or the value in
    parentheses."""
    from typer.core import TyperCommand

    needed = {option.name for option in options if option.needed}

    class Command(TyperCommand):
        def format_help(self, ctx: Any, formatter: Any) -> None:
            saved = [(param, param.default, param.show_default, param.required) for param in self.params]
            try:
                for param in self.params:
                    if isinstance(param.show_default, str):
                        param.default, param.show_default = _plain_default(param), True
                    param.required = param.required or param.name in needed
                super().format_help(ctx, formatter)
            finally:
                for param, default, show_default, required in saved:
                    param.default, param.show_default, param.required = default, show_default, required

    return Command


def _plain_default(param: Any) -> Any:
    """The value typer shows as a plain default: the flag's own for --x/--no-x, else the text."""
    if getattr(param, "is_bool_flag", False) and param.secondary_opts:
        return param.show_default == "True"
    return param.show_default


def _example(options: list[Option]) -> str:
    option = next((o for o in options if not o.argument and not o.required and o.kind in (int, float)), None)
    return f"{option.name}={option.default}" if option else "KEY=VALUE"
