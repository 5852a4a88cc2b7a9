"""Chat templates rendered once per conversation shape, when a template provably copies contents.

Rendering a chat template costs far more than the text it writes (Jinja's sandbox checks every
attribute access, transformers copies and normalizes each message): about half of tokenizing a
training pair. Most templates, SmolLM2's and ChatML's among them, read a message's content only
to write it out unchanged. For such a template the rendered text of a conversation is that of
its *shape* (the roles in order) with each content put back where the shape's render wrote a
marker in its place: the template is rendered once per shape and a batch, and each input is a
string join.

That a template treats contents so is proved on its syntax tree (`content_is_verbatim`), not
assumed: every `message['content']` / `message.content` must reach an output tag through `+`,
`~` and conditional expressions only (no filter, test, method, comparison, `set` or macro sees
it), and a message or the message list is only indexed, iterated, counted, tested for its type
or read for its keys. Anything else (Llama 3's `| trim`, Qwen3's `.split('</think>')`, a
`{% generation %}` tag) is left to the template, rendered input by input as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

SLOT = "\x00synpref-slot-{}\x00"
_SLOT = re.compile("\x00synpref-slot-([0-9]+)\x00")
# What may be read off a message or the message list without reading a content: its type,
# whether it is there, how long it is. Everything else that is not named here is refused.
_TESTS = {"defined", "undefined", "none", "mapping", "sequence", "iterable", "string", "number", "boolean", "true", "false"}
_COUNTING_FILTERS = {"length", "count"}
_MESSAGE_FILTERS = {"first", "last", "reverse", "list"}  # a message or messages again
_METHODS = set(dir(dict)) | set(dir(list))


class _Unproven(Exception):
    pass


def content_is_verbatim(template: str) -> bool:
    """Whether `template` writes each message's content unchanged and reads nothing else of it."""
    import jinja2
    import jinja2.ext

    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    try:
        tree = environment.parse(template)
    except jinja2.TemplateError:
        return False
    holders = {"messages"}  # names bound to a message or a list of them
    while True:
        check = _Check(set(holders))
        try:
            check.walk(tree, [])
        except _Unproven:
            return False
        if check.holders == holders:
            return True
        holders = check.holders  # a `set` or `for` bound another name to messages: look again


class _Check:
    def __init__(self, holders: set[str]):
        self.holders = holders

    def walk(self, node: Any, ancestors: list[Any]) -> None:
        from jinja2 import nodes

        if isinstance(node, (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
            raise _Unproven
        if isinstance(node, nodes.For) and node.recursive:
            raise _Unproven
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in self.holders:
            self.holder(node, ancestors)
        if _key(node) == "content":
            self.content(node, ancestors)
        if (isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name == "loop"
                and node.attr in {"previtem", "nextitem"}):
            raise _Unproven
        ancestors.append(node)
        for child in node.iter_child_nodes():
            self.walk(child, ancestors)
        ancestors.pop()

    def holder(self, node: Any, ancestors: list[Any]) -> None:
        """`node` evaluates to a message or a message list: where it is used must not read a content."""
        from jinja2 import nodes

        parent, above = ancestors[-1], ancestors[:-1]
        if isinstance(parent, (nodes.Getitem, nodes.Getattr)) and parent.node is node:
            key = _key(parent)
            if key is None:  # indexed or sliced by a number: a message or messages again
                if isinstance(parent, nodes.Getattr) or not (isinstance(parent.arg, nodes.Slice) or _number(parent.arg)):
                    raise _Unproven  # a key held in a variable may be 'content'
                return self.holder(parent, above)
            if key != "content" and (key in _METHODS or key.startswith("_")):
                raise _Unproven
            return None  # a content is checked where it is read; a role or a missing key is free
        if isinstance(parent, nodes.For) and parent.iter is node:
            return self.bind(parent.target)
        if isinstance(parent, nodes.Assign) and parent.node is node:
            return self.bind(parent.target)
        if isinstance(parent, nodes.Filter) and parent.node is node:
            if parent.name in _COUNTING_FILTERS:
                return None
            if parent.name in _MESSAGE_FILTERS or (
                parent.name in {"selectattr", "rejectattr"} and parent.args and _constant(parent.args[0]) == "role"
            ):
                return self.holder(parent, above)
            raise _Unproven
        if isinstance(parent, nodes.Test) and parent.node is node and parent.name in _TESTS and not parent.args:
            return None
        if isinstance(parent, nodes.CondExpr) and node is not parent.test:
            return self.holder(parent, above)
        raise _Unproven

    def bind(self, target: Any) -> None:
        from jinja2 import nodes

        if not isinstance(target, nodes.Name):
            raise _Unproven
        self.holders.add(target.name)

    def content(self, node: Any, ancestors: list[Any]) -> None:
        """A content: only joined into text that goes straight to the output."""
        from jinja2 import nodes

        for depth in range(len(ancestors) - 1, -1, -1):
            parent = ancestors[depth]
            if isinstance(parent, (nodes.Add, nodes.Concat)) or (isinstance(parent, nodes.CondExpr) and node is not parent.test):
                node = parent
                continue
            if isinstance(parent, nodes.Output):
                captured = (nodes.AssignBlock, nodes.FilterBlock, nodes.CallBlock, nodes.Macro, nodes.ScopedEvalContextModifier)
                if any(isinstance(outer, captured) for outer in ancestors[:depth]):
                    raise _Unproven
                return
            raise _Unproven
        raise _Unproven


def _key(node: Any) -> str | None:
    """The constant string key of `x['key']` or `x.key`, else None."""
    from jinja2 import nodes

    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem):
        return _constant(node.arg)
    return None


def _number(node: Any) -> bool:
    """Whether `node` can only be a number: a constant, a loop counter, a length, sums of them."""
    from jinja2 import nodes

    if isinstance(node, nodes.Const):
        return isinstance(node.value, int) and not isinstance(node.value, bool)
    if isinstance(node, nodes.Neg):
        return _number(node.node)
    if isinstance(node, (nodes.Add, nodes.Sub)):
        return _number(node.left) and _number(node.right)
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name == "loop":
        return node.attr in {"index", "index0", "revindex", "revindex0", "length", "depth", "depth0"}
    return isinstance(node, nodes.Filter) and node.name in _COUNTING_FILTERS


def _constant(node: Any) -> str | None:
    from jinja2 import nodes

    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


class ShapeRenderer:
    """`apply_chat_template(chats, chat_template=template)` of many chats: one render per shape.

    Only for a template that `content_is_verbatim` accepts, and chats of {"role", "content"}
    messages whose contents are strings (what `RewardFormatter` renders)."""

    def __init__(self, tokenizer: Any, template: str):
        self.tokenizer, self.template = tokenizer, template

    def __call__(self, chats: Sequence[Sequence[tuple[str, str]]]) -> list[str]:
        """The rendered text of each chat, a list of (role, content)."""
        shapes: dict[tuple[str, ...], int] = {}
        numbers = [shapes.setdefault(tuple(role for role, _ in chat), len(shapes)) for chat in chats]
        probes = [[{"role": role, "content": SLOT.format(i)} for i, role in enumerate(shape)] for shape in shapes]
        rendered = self.tokenizer.apply_chat_template(probes, chat_template=self.template, tokenize=False)
        # [literal, slot, literal, ..., literal] per shape: the slots are message numbers
        layouts = []
        for text in rendered:
            parts: list[Any] = _SLOT.split(text)
            parts[1::2] = [int(slot) for slot in parts[1::2]]
            layouts.append(parts)
        texts = []
        for chat, number in zip(chats, numbers):
            parts = list(layouts[number])
            parts[1::2] = [chat[slot][1] for slot in parts[1::2]]
            texts.append("".join(parts))
        return texts
