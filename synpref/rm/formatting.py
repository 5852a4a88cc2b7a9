"""The one input format of a reward model, shared by training, scoring, serving and saved models.

Chat models (the tokenizer has a chat template) see what Skywork-Reward-V2 expects:

    the tokenizer's chat template over conversation + response, with
    - no system prompt added: a default system prompt that the template injects when the
      conversation has none (SmolLM2: "You are a helpful AI assistant named SmolLM...") is
      removed; a system message in the conversation itself is kept;
    - the text ending at the reply's end-of-turn token: whitespace a template writes after it
      (SmolLM2 and Qwen write "<|im_end|>\n") is dropped, because a policy's sampled reply ends
      at that token, so the query an RLHF trainer decodes ends there too;
    - no doubled BOS: when the template writes the BOS token and the tokenizer adds one again
      on encoding, the template's copy is stripped from the text.

These rules are written into a chat template of their own (`reward_chat_template`), which the
formatter renders and every saved model carries (`synpref.rm.saving`): plain
`apply_chat_template`, the Skywork-Reward-V2 model-card recipe, TRL and rewardbench then produce
the same token ids as synpref, with no synpref code.

Encoders (no chat template, e.g. MiniLM/BERT) see a text pair, `[CLS] prompt [SEP] response
[SEP]`, where the prompt is the conversation as "Role: content" blocks joined by a blank line
and the response is the reply's content alone. When an input is too long, the longer of the
two is cut from its end. Where an API carries one text per input (OpenRLHF's query, vLLM's and
SGLang's input), an encoder's text is `prompt + "[SEP]" + response` (`joined_text`), split again
at the last SEP on arrival.

Decoders read the reward at the last token, so an over-long decoder input keeps its *last*
`max_length` tokens: the end of the response, which is what is being judged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from synpref.data.models import Message

_PROBE_SYSTEM = "\x00synpref-probe-system"
_PROBE_USER = "\x00synpref-probe-user"
_PROBE_ASSISTANT = "\x00synpref-probe-assistant"
# Inputs a render per shape must render as the template does: contents with markers, Jinja,
# whitespace at the edges, empty, and added tokens; with and without a system message.
_SHAPE_PROBES = [
    ([Message(role="user", content="\x00synpref-slot-1\x00 {{ messages }}{% raise %}")], Message(role="assistant", content=" a\n\n")),
    ([Message(role="system", content=""), Message(role="user", content="<|im_end|>\n")], Message(role="assistant", content="")),
    ([Message(role="user", content="\n"), Message(role="assistant", content="x"), Message(role="user", content="  ")],
     Message(role="assistant", content="<|im_start|>system\n<|im_end|>\n \t")),
]
# First line of every template `reward_chat_template` writes: wrapping one twice changes nothing.
TEMPLATE_MARK = "{#- synpref reward-model template: see synpref/rm/formatting.py -#}"


@dataclass(frozen=True)
class _TemplateFacts:
    default_system: str  # what the template injects when there is no system message
    standalone_bos: str  # the template's leading BOS when it is not part of a message header
    tokenizer_adds_bos: bool
    turn_end: str  # the token that ends a message, when the template writes whitespace after it
    bos_is_header: bool  # the BOS token opens every message (SmolLM2: <|im_start|>)


class RewardFormatter:
    """Turns (conversation, response) into token ids the same way everywhere."""

    def __init__(self, tokenizer: Any, max_length: int = 4096):
        self.tokenizer = tokenizer
        # Never past the tokenizer's limit: `load_reward_model` sets it to the model's positions.
        self.max_length = min(max_length, getattr(tokenizer, "model_max_length", max_length))
        self.is_chat = bool(getattr(tokenizer, "chat_template", None))
        self.template = reward_chat_template(tokenizer) if self.is_chat else None
        self._facts = _template_facts(tokenizer) if self.is_chat else None
        self._shapes = self._shape_renderer() if self.is_chat else None

    def text(self, conversation: Sequence[Message], response: Message) -> tuple[str, str | None]:
        """(text, text_pair): the model input before tokenization; text_pair for encoders."""
        if not self.is_chat:
            prompt = "\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in conversation)
            return prompt, response.content
        messages = [{"role": m.role, "content": m.content} for m in [*conversation, response]]
        rendered = self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False)
        return self._without_doubled_bos(rendered), None

    def texts(self, inputs: Sequence[tuple[Sequence[Message], Message]]) -> list[tuple[str, str | None]]:
        """`text` of each (conversation, response): the template rendered once per conversation
        shape (the roles in order) where it provably copies contents, else in one call for all."""
        if not self.is_chat or not inputs:
            return [self.text(conversation, response) for conversation, response in inputs]
        if self._shapes is not None:
            try:
                return self._shaped_texts(inputs, *self._shapes)
            except Exception:  # a shape the template refuses: the template says why, below
                pass
        chats = [[{"role": m.role, "content": m.content} for m in [*conversation, response]] for conversation, response in inputs]
        rendered = self.tokenizer.apply_chat_template(chats, chat_template=self.template, tokenize=False)
        return [(self._without_doubled_bos(text), None) for text in rendered]

    def _shaped_texts(self, inputs: Sequence[tuple[Sequence[Message], Message]], renderer: Any, facts: _TemplateFacts) -> list[tuple[str, None]]:
        """`texts` through `renderer`, the original template's render per shape
        (`synpref.rm.template_shapes`), then the edits of `reward_chat_template` for `facts`,
        made here as its Jinja makes them."""
        chats = [[(m.role, m.content) for m in [*conversation, response]] for conversation, response in inputs]
        injected = facts.standalone_bos + facts.default_system
        texts = []
        for chat, rendered in zip(chats, renderer(chats)):
            if facts.default_system and chat[0][0] != "system" and rendered.startswith(injected):
                rendered = facts.standalone_bos + rendered[len(injected) :]
            if facts.turn_end and rendered.rstrip().endswith(facts.turn_end):
                rendered = rendered.rstrip()
            texts.append((self._without_doubled_bos(rendered), None))
        return texts

    def _shape_renderer(self) -> tuple[Any, _TemplateFacts] | None:
        """A `ShapeRenderer` of the original template and the facts of its edits, where the
        template provably copies contents and the two make exactly the reward template's text
        (checked on probe inputs with the pitfalls); else None."""
        from synpref.rm.template_shapes import ShapeRenderer, content_is_verbatim

        head = TEMPLATE_MARK + "{% set rendered %}"
        end = self.template.rfind("{% endset %}")
        original = self.template[len(head) : end] if self.template.startswith(head) and end > 0 else ""
        # Jinja trims a newline after a block tag, spaces before one and a template's last
        # newline: at the edges of the wrapped template, whitespace would render differently.
        if not original or original != original.strip():
            return None
        try:
            if not content_is_verbatim(original):
                return None
            facts = _template_facts(self.tokenizer, original)
            if _wrapped(original, facts) != self.template:
                return None
            renderer = ShapeRenderer(self.tokenizer, original)
            shaped = self._shaped_texts(_SHAPE_PROBES, renderer, facts)
            rendered = [self.text(conversation, response) for conversation, response in _SHAPE_PROBES]
        except Exception:
            return None
        return (renderer, facts) if shaped == rendered else None

    def _without_doubled_bos(self, rendered: str) -> str:
        bos = self._facts.standalone_bos
        if self._facts.tokenizer_adds_bos and bos and rendered.startswith(bos):
            return rendered[len(bos) :]  # the tokenizer puts it back; keeping ours would double it
        return rendered

    def joined_text(self, conversation: Sequence[Message], response: Message) -> str:
        """The input as one string, as OpenRLHF, vLLM and SGLang clients send it."""
        text, text_pair = self.text(conversation, response)
        return text if text_pair is None else text + self.tokenizer.sep_token + text_pair

    def split_text(self, text: str) -> tuple[str, str | None]:
        """Inverse of `joined_text`: an encoder's (prompt, response), a decoder's (text, None)."""
        if self.is_chat or not self.tokenizer.sep_token:
            return text, None
        cls, sep = self.tokenizer.cls_token or "", self.tokenizer.sep_token
        text = text.removeprefix(cls).removesuffix(sep)  # a decoded sequence carries both
        prompt, found, response = text.rpartition(sep)
        return (prompt, response) if found else (text, "")

    def encode(self, conversation: Sequence[Message], response: Message) -> list[int]:
        """Token ids of one input, truncated to `max_length` (see the module docstring)."""
        return self.encode_text(*self.text(conversation, response))

    def encode_text(self, text: str, text_pair: str | None = None) -> list[int]:
        """Ids of an already formatted input, truncated as `encode` truncates."""
        if text_pair is not None:
            return self.tokenizer(
                text, text_pair, truncation="longest_first", max_length=self.max_length
            )["input_ids"]
        ids = self.tokenizer(text)["input_ids"]
        return ids[-self.max_length :]

    def encode_messages(self, messages: Sequence[Message | dict]) -> list[int]:
        """Ids of a conversation whose last message is the response to score."""
        messages = [m if isinstance(m, Message) else Message(**m) for m in messages]
        if len(messages) < 2 or messages[-1].role != "assistant":
            raise ValueError("a conversation to score needs a history and a final assistant message")
        return self.encode(messages[:-1], messages[-1])


def reward_chat_template(tokenizer: Any) -> str:
    """The tokenizer's chat template rewritten to render the reward-model format itself.

    The original template runs unchanged inside a `{% set %}` block; what it wrote is then
    edited in Jinja: the injected default system prompt removed, the whitespace after the last
    end-of-turn dropped (not with a generation prompt, which must stay as the policy saw it).
    Facts come from rendering probe conversations, so any template works, not only SmolLM2's.
    """
    template = tokenizer.chat_template
    if template.startswith(TEMPLATE_MARK):
        return template
    return _wrapped(template, _template_facts(tokenizer))


def _wrapped(template: str, facts: _TemplateFacts) -> str:
    """`template` inside the reward-model edits that `facts` call for."""
    parts = [TEMPLATE_MARK, "{% set rendered %}", template, "{% endset %}"]
    if facts.default_system:
        injected = facts.standalone_bos + facts.default_system
        parts.append(
            "{% if messages[0]['role'] != 'system' and rendered.startswith(" + _literal(injected) + ") %}"
            "{% set rendered = " + _literal(facts.standalone_bos) + " + rendered[" + str(len(injected)) + ":] %}"
            "{% endif %}"
        )
    if facts.turn_end:
        parts.append(
            "{% if not add_generation_prompt and rendered.rstrip().endswith(" + _literal(facts.turn_end) + ") %}"
            "{% set rendered = rendered.rstrip() %}{% endif %}"
        )
    parts.append("{{ rendered }}")
    return "".join(parts)


def _literal(text: str) -> str:
    """A Jinja string literal (Jinja reads Python's escapes, which JSON's are a subset of)."""
    return json.dumps(text, ensure_ascii=False)


def bos_is_chat_header(tokenizer: Any) -> bool:
    """Whether the BOS token opens every chat message (SmolLM2's <|im_start|>).

    Recipes that strip "a duplicated BOS" from rendered text (the Skywork-Reward-V2 model card,
    veRL) would then cut off the first message's header; a saved model gets no BOS token."""
    return bool(getattr(tokenizer, "chat_template", None)) and _template_facts(tokenizer).bos_is_header


def _template_facts(tokenizer: Any, chat_template: str | None = None) -> _TemplateFacts:
    """Learn, by rendering probe conversations, what the chat template (the tokenizer's unless
    `chat_template` is given) adds on its own."""

    def render(messages: list[dict]) -> str:
        if chat_template is None:
            return tokenizer.apply_chat_template(messages, tokenize=False)
        return tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False)

    system = {"role": "system", "content": _PROBE_SYSTEM}
    user = {"role": "user", "content": _PROBE_USER}
    alone = render([user])
    bos = tokenizer.bos_token or ""
    turn_end = _turn_end(tokenizer, render([user, {"role": "assistant", "content": _PROBE_ASSISTANT}]))
    try:
        system_only, with_system = render([system]), render([system, user])
    except Exception:  # templates such as Gemma's refuse system messages: nothing injected
        standalone = bos if bos and alone.startswith(bos) else ""
        return _TemplateFacts("", standalone, _adds_bos(tokenizer), turn_end, False)
    user_block = with_system[len(system_only):] if with_system.startswith(system_only) else ""
    default = alone[: -len(user_block)] if user_block and alone.endswith(user_block) else ""
    # SmolLM2's BOS is `<|im_start|>`, which opens every message: that one is no prefix.
    header = bool(bos) and user_block.startswith(bos)
    standalone = bos if bos and system_only.startswith(bos) and not header else ""
    return _TemplateFacts(default.removeprefix(standalone), standalone, _adds_bos(tokenizer), turn_end, header)


def _turn_end(tokenizer: Any, rendered: str) -> str:
    """The special token a rendered conversation ends with, when whitespace follows it."""
    stripped = rendered.rstrip()
    if stripped == rendered:
        return ""
    specials = set(getattr(tokenizer, "all_special_tokens", [])) | set(tokenizer.get_added_vocab())
    return next((t for t in sorted(specials, key=len, reverse=True) if t and stripped.endswith(t)), "")


def _adds_bos(tokenizer: Any) -> bool:
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
        return False
    with_special = tokenizer("a")["input_ids"]
    return len(with_special) > 0 and with_special[0] == bos_id
