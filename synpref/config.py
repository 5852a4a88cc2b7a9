"""Config files: YAML read and validated against a pydantic model, errors naming the file and the
field; `--set section.key=value` overrides. Every config loader in synpref goes through here."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from synpref.errors import SynprefError
from synpref.text import file_kind, printable

M = TypeVar("M", bound=BaseModel)


# Config and spec files are a few KB; a path that names something endless (/dev/zero, a FIFO
# nobody writes to) or huge must fail at once, not read until memory runs out.
MAX_YAML_BYTES = 1024 * 1024


def load_yaml(path: str | Path, where: str) -> Any:
    """The YAML document in `path` (None when empty); a file that cannot be read or parsed, is
    not a regular file or is over MAX_YAML_BYTES is a `SynprefError` starting with `where`."""
    try:
        return yaml.safe_load(read_small_file(Path(path), MAX_YAML_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SynprefError(f"{printable(where)}: {error}") from None
    except SynprefError as error:
        raise SynprefError(f"{printable(where)}: {error}") from None


def read_small_file(path: Path, limit: int) -> bytes:
    """The bytes of `path`, which must be a regular file (symlinks followed) of at most `limit`
    bytes; reads at most `limit` + 1 bytes whatever the file claims."""
    # O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer, before fstat can
    # tell it is one. Regular files ignore the flag.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise SynprefError(not_regular_message(path, mode))
    with os.fdopen(descriptor, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise SynprefError(f"{printable(str(path))} is over the limit of {limit:,} bytes")
    return data


def not_regular_message(path: Path, mode: int) -> str:
    """"PATH is a FIFO (named pipe), not a regular file", naming a symlink's target too."""
    target = os.path.realpath(path)
    link = f" (a link to {printable(target)})" if target != os.path.abspath(path) else ""
    return f"{printable(str(path))}{link} is {file_kind(mode)}, not a regular file"


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
