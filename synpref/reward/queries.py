"""The policy's reply inside an OpenRLHF query, for the verifier to read.

OpenRLHF decodes prompt + reply ids with `skip_special_tokens=False` (left padding and the
end-of-turn token included) and sends the prompt text beside it. The reply is what follows the
prompt; without a prompt, what follows the last assistant header of the reward model's chat
template (an encoder's: the last SEP, `RewardFormatter.split_text`).
"""

from __future__ import annotations

from functools import cached_property

_USER, _ASSISTANT = "\x00synpref-user", "\x00synpref-assistant"


class ReplyReader:
    def __init__(self, formatter):
        self.formatter = formatter
        tokenizer = formatter.tokenizer
        self.specials = sorted({t for t in tokenizer.all_special_tokens if t}, key=len, reverse=True)

    @cached_property
    def assistant_header(self) -> str:
        """What a chat template writes between a user message's text and the reply's text."""
        if not self.formatter.is_chat:
            return ""
        messages = [{"role": "user", "content": _USER}, {"role": "assistant", "content": _ASSISTANT}]
        rendered = self.formatter.tokenizer.apply_chat_template(messages, chat_template=self.formatter.template, tokenize=False)
        return rendered.split(_USER, 1)[1].split(_ASSISTANT, 1)[0] if _USER in rendered and _ASSISTANT in rendered else ""

    def reply(self, query: str, prompt: str | None = None) -> str:
        if prompt and (at := query.find(prompt)) >= 0:
            text = query[at + len(prompt) :]
        elif not self.formatter.is_chat:
            text = self.formatter.split_text(query)[1] or ""
        elif self.assistant_header and self.assistant_header in query:
            text = query.rsplit(self.assistant_header, 1)[1]
        else:
            text = query
        return self._strip_specials(text)

    def _strip_specials(self, text: str) -> str:
        """Drop the end-of-turn and padding tokens around a decoded reply."""
        text = text.strip()
        changed = True
        while changed and text:
            changed = False
            for token in self.specials:
                if text.endswith(token):
                    text, changed = text[: -len(token)].rstrip(), True
                if text.startswith(token):
                    text, changed = text[len(token) :].lstrip(), True
        return text
