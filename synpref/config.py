"""Config files: YAML read and validated against a pydantic model, errors naming the file and the
field; `--set section.key=value` overrides. Every config loader in synpref goes through here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from synpref.errors import SynprefError

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | Path, where: str) -> Any:
    """The YAML document in `path` (None when empty); a file that cannot be read or parsed is a
    `SynprefError` starting with `where`."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SynprefError(f"{where}: {error}") from None


def validated(model: type[M], data: Any, where: str, whole: str = "config") -> M:
    """`data` as `model`; a validation error lists each field with its problem (`whole`: an error
    about the document itself)."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise SynprefError(f"{where}: {validation_message(error, whole)}") from None


def validation_message(error: ValidationError, whole: str = "config") -> str:
    return "; ".join(f"{'.'.join(str(part) for part in item['loc']) or whole}: {item['msg']}" for item in error.errors())


def set_dotted(data: dict[str, Any], override: str) -> None:
    """Apply one `--set section.key=value` (the value read as YAML) to a config dict."""
    key, sep, value = override.partition("=")
    if not sep:
        raise SynprefError(f"--set {override!r}: expected KEY=VALUE")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SynprefError(f"--set {override!r}: {part} is not a section")
    node[leaf] = yaml.safe_load(value)
