"""Contract over every command of `synpref`: its options are its config model's fields, with the
model's defaults and help, and `--config` / `--set` work the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import click
import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from synpref.cli import app
from synpref.options import options_of, shown_default


def _commands(group=app, path=()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path + (info.name or info.callback.__name__.replace("_", "-"),), info.callback) for info in group.registered_commands]
    for sub in group.registered_groups:
        found += _commands(sub.typer_instance, path + (sub.name,))
    return found


COMMANDS = _commands()
NAMES = [" ".join(path) for path, _ in COMMANDS]


def _click(path: tuple[str, ...]) -> click.Command:
    command = get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def test_every_command_is_listed():
    assert {"init", "ingest", "train", "eval", "serve", "demo", "curate stage2", "label add-user", "reward score"} <= set(NAMES)


@pytest.mark.parametrize("path, callback", COMMANDS, ids=NAMES)
def test_each_option_is_one_field_with_its_default_and_help(path, callback):
    assert hasattr(callback, "model"), f"{' '.join(path)} is not built from a config model (synpref.options.command)"
    options = {option.name: option for option in options_of(callback.model, callback.flags)}
    params = {param.name: param for param in _click(path).params if param.name not in ("help", "config", "set")}
    assert set(params) == set(options)
    for name, param in params.items():
        option = options[name]
        field = callback.model.model_fields[name]
        assert param.help == field.description == option.help, name
        assert param.required == field.is_required(), name
        if isinstance(param, click.Option):
            assert param.default is None, name  # "not given": the model's default applies
            assert param.show_default == shown_default(option), name
            assert param.opts + param.secondary_opts == [part for flag in option.flags for part in flag.split("/")], name
    assert {param.name for param in _click(path).params} >= {"config", "set"}


def _value(kind: Any, tmp_path: Path) -> list[str]:
    kind = (get_args(kind) or (kind,))[0] if getattr(kind, "__origin__", None) is list else kind
    return [str(tmp_path / "given") if kind is Path else "password-1" if kind is str else "1"]


@pytest.mark.parametrize("path, callback", COMMANDS, ids=NAMES)
def test_flags_left_out_mean_the_model_defaults(path, callback, tmp_path, monkeypatch):
    arguments, flags, required = [], [], {}
    for option in options_of(callback.model, callback.flags):
        if not option.required:
            continue
        value = _value(option.kind, tmp_path)
        required[option.name] = value if getattr(option.kind, "__origin__", None) is list else value[0]
        if option.argument:
            arguments += value
        else:
            flags += [option.flags[0].split("/")[0], value[0]]
    seen = []
    monkeypatch.setattr(callback, "run", seen.append)
    result = CliRunner().invoke(app, [*path, *arguments, *flags])
    assert result.exit_code == 0, result.output
    assert seen == [callback.model.model_validate(required)]


def test_flags_win_over_set_over_the_config_file(tmp_path, monkeypatch):
    callback = dict(zip(NAMES, (c for _, c in COMMANDS)))["sample"]
    seen = []
    monkeypatch.setattr(callback, "run", seen.append)
    config = tmp_path / "sample.yaml"
    config.write_text(yaml.safe_dump({"pairs": 10, "seed": 3, "output": "from-file.jsonl"}))
    result = CliRunner().invoke(app, ["sample", "out.jsonl", "--config", str(config), "--set", "seed=4", "--set", "pairs=5", "--pairs", "20"])
    assert result.exit_code == 0, result.output
    assert (seen[0].output, seen[0].pairs, seen[0].seed) == (Path("out.jsonl"), 20, 4)


def test_a_bad_value_names_the_option(tmp_path):
    config = tmp_path / "sample.yaml"
    config.write_text("pairs: many\n")
    result = CliRunner().invoke(app, ["sample", "out.jsonl", "--config", str(config)])
    assert result.exit_code != 0
    assert "pairs: Input should be a valid integer" in str(result.exception)
