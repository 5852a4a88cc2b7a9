"""The one input format of a reward model, shared by training, scoring and serving.

Chat models (the tokenizer has a chat template) see what Skywork-Reward-V2 expects:

    the tokenizer's chat template over conversation + response, with
    - no system prompt added: a default system prompt that the template injects when the
      conversation has none (SmolLM2: "You are a helpful AI assistant named SmolLM...") is
      removed; a system message in the conversation itself is kept;
    - no doubled BOS: when the template writes the BOS token and the tokenizer adds one again
      on encoding, the template's copy is stripped from the text.

Encoders (no chat template, e.g. MiniLM/BERT) see a text pair, `[CLS] prompt [SEP] response
[SEP]`, where the prompt is the conversation as "Role: content" blocks joined by a blank line
and the response is the reply's content alone. When an input is too long, the longer of the
two is cut from its end.

Decoders read the reward at the last token, so an over-long decoder input keeps its *last*
`max_length` tokens: the end of the response, which is what is being judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from synpref.data.models import Message

_PROBE_SYSTEM = "\x00synpref-probe-system"
_PROBE_USER = "\x00synpref-probe-user"


@dataclass(frozen=True)
class _TemplateFacts:
    default_system: str  # what the template injects when there is no system message
    standalone_bos: str  # the template's leading BOS when it is not part of a message header
    tokenizer_adds_bos: bool


class RewardFormatter:
    """Turns (conversation, response) into token ids the same way everywhere."""

    def __init__(self, tokenizer: Any, max_length: int = 4096):
        self.tokenizer = tokenizer
        # Never past the tokenizer's limit: `load_reward_model` sets it to the model's positions.
        self.max_length = min(max_length, getattr(tokenizer, "model_max_length", max_length))
        self.is_chat = bool(getattr(tokenizer, "chat_template", None))
        self._facts = _template_facts(tokenizer) if self.is_chat else None

    def text(self, conversation: Sequence[Message], response: Message) -> tuple[str, str | None]:
        """(text, text_pair): the model input before tokenization; text_pair for encoders."""
        if not self.is_chat:
            prompt = "\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in conversation)
            return prompt, response.content
        messages = [{"role": m.role, "content": m.content} for m in [*conversation, response]]
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False)
        facts = self._facts
        bos = facts.standalone_bos if rendered.startswith(facts.standalone_bos) else ""
        body = rendered[len(bos):]
        if not any(m.role == "system" for m in conversation):
            body = body.removeprefix(facts.default_system)
        if facts.tokenizer_adds_bos:
            bos = ""  # the tokenizer puts it back; keeping ours would double it
        return bos + body, None

    def encode(self, conversation: Sequence[Message], response: Message) -> list[int]:
        """Token ids of one input, truncated to `max_length` (see the module docstring)."""
        text, text_pair = self.text(conversation, response)
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


def _template_facts(tokenizer: Any) -> _TemplateFacts:
    """Learn, by rendering probe conversations, what the chat template adds on its own."""

    def render(messages: list[dict]) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False)

    system = {"role": "system", "content": _PROBE_SYSTEM}
    user = {"role": "user", "content": _PROBE_USER}
    alone = render([user])
    bos = tokenizer.bos_token or ""
    try:
        system_only, with_system = render([system]), render([system, user])
    except Exception:  # templates such as Gemma's refuse system messages: nothing injected
        standalone = bos if bos and alone.startswith(bos) else ""
        return _TemplateFacts("", standalone, _adds_bos(tokenizer))
    user_block = with_system[len(system_only):] if with_system.startswith(system_only) else ""
    default = alone[: -len(user_block)] if user_block and alone.endswith(user_block) else ""
    # SmolLM2's BOS is `<|im_start|>`, which opens every message: that one is no prefix.
    standalone = bos if bos and system_only.startswith(bos) and not user_block.startswith(bos) else ""
    return _TemplateFacts(default.removeprefix(standalone), standalone, _adds_bos(tokenizer))


def _adds_bos(tokenizer: Any) -> bool:
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
        return False
    with_special = tokenizer("a")["input_ids"]
    return len(with_special) > 0 and with_special[0] == bos_id
