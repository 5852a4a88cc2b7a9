"""`Registry`: the named classes of one extension point (benchmarks, input formats, verifiers,
judge backends). A second class under a taken name is an error, never a silent replacement."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, type[T]], Generic[T]):
    """A dict from name to class; `register` is its only way in. `kind` names the entries in errors."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, cls: type[T], name: str | None = None) -> type[T]:
        """Add `cls` under `name` (default: its `name` attribute); usable as a class decorator."""
        name = cls.name if name is None else name
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered ({self[name].__name__})")
        self[name] = cls
        return cls
