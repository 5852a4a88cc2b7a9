"""The one input format: exact strings against the chat template (acceptance 1)."""

from __future__ import annotations

import jinja2

from synpref.data.models import Message
from synpref.rm.formatting import RewardFormatter

CONVERSATION = [
    Message(role="user", content="Hi there"),
    Message(role="assistant", content="Hello! How can I help?"),
    Message(role="user", content="What is 2 + 2?"),
]
RESPONSE = Message(role="assistant", content="2 + 2 = 4.")
SMOLLM2_DEFAULT_SYSTEM = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
)


def test_smollm2_text_is_the_chat_template_without_a_system_prompt(smollm2_tokenizer):
    expected = (
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
        "<|im_start|>assistant\n2 + 2 = 4.<|im_end|>"
    )
    text, text_pair = RewardFormatter(smollm2_tokenizer).text(CONVERSATION, RESPONSE)
    assert (text, text_pair) == (expected, None)
    # Exactly what the template writes, less the system prompt it injects on its own and the
    # newline after the last <|im_end|>, where a policy's sampled reply ends.
    messages = [m.model_dump() for m in [*CONVERSATION, RESPONSE]]
    assert smollm2_tokenizer.apply_chat_template(messages, tokenize=False) == SMOLLM2_DEFAULT_SYSTEM + expected + "\n"


def test_smollm2_ids_have_one_leading_bos(smollm2_tokenizer):
    # SmolLM2's BOS is <|im_start|>, which opens every message: it must be kept, once.
    ids = RewardFormatter(smollm2_tokenizer).encode(CONVERSATION, RESPONSE)
    im_start = smollm2_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids[:2] == [im_start, smollm2_tokenizer.convert_tokens_to_ids("user")]
    assert ids.count(im_start) == 4
    assert ids == smollm2_tokenizer(RewardFormatter(smollm2_tokenizer).text(CONVERSATION, RESPONSE)[0])["input_ids"]


def test_a_system_message_in_the_conversation_is_kept(smollm2_tokenizer):
    conversation = [Message(role="system", content="Be brief."), *CONVERSATION[2:]]
    text, _ = RewardFormatter(smollm2_tokenizer).text(conversation, RESPONSE)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
        "<|im_start|>assistant\n2 + 2 = 4.<|im_end|>"
    )


def test_texts_renders_many_inputs_as_text_renders_each(smollm2_tokenizer):
    system = [Message(role="system", content="Be brief."), *CONVERSATION[2:]]
    inputs = [(CONVERSATION, RESPONSE), (system, RESPONSE), (CONVERSATION[:1], Message(role="assistant", content=" x\n"))]
    formatter = RewardFormatter(smollm2_tokenizer)
    assert formatter.texts(inputs) == [formatter.text(conversation, response) for conversation, response in inputs]
    assert formatter.texts([]) == []


class BosAddingTokenizer:
    """A Llama-3-like tokenizer: the template writes BOS and a default system prompt, and
    encoding adds BOS again."""

    bos_token, bos_token_id = "<s>", 1
    chat_template = (
        "{{ bos_token }}{% if messages[0].role != 'system' %}<|system|>Default prompt<|end|>{% endif %}"
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
    )

    def apply_chat_template(self, messages, tokenize=False, chat_template=None, add_generation_prompt=False):
        template = jinja2.Template(chat_template or self.chat_template)
        return template.render(messages=messages, bos_token=self.bos_token, add_generation_prompt=add_generation_prompt)

    def get_added_vocab(self):
        return {"<|end|>": 3}

    def __call__(self, text):
        return {"input_ids": [self.bos_token_id] + [ord(c) for c in text]}


def test_a_bos_the_tokenizer_adds_again_is_stripped_from_the_text():
    formatter = RewardFormatter(BosAddingTokenizer())
    text, _ = formatter.text([Message(role="user", content="hi")], Message(role="assistant", content="yo"))
    assert text == "<|user|>hi<|end|><|assistant|>yo<|end|>"
    ids = formatter.encode([Message(role="user", content="hi")], Message(role="assistant", content="yo"))
    assert ids == [1] + [ord(c) for c in text]


def test_long_decoder_inputs_keep_their_end(smollm2_tokenizer):
    full = RewardFormatter(smollm2_tokenizer).encode(CONVERSATION, RESPONSE)
    assert RewardFormatter(smollm2_tokenizer, max_length=10).encode(CONVERSATION, RESPONSE) == full[-10:]


def test_encoders_get_a_prompt_response_text_pair():
    from synpref.rm.models import load_reward_model

    _, tokenizer = load_reward_model("minilm-l6")
    formatter = RewardFormatter(tokenizer)
    text, text_pair = formatter.text(CONVERSATION, RESPONSE)
    assert text == "User: Hi there\n\nAssistant: Hello! How can I help?\n\nUser: What is 2 + 2?"
    assert text_pair == "2 + 2 = 4."
    ids = formatter.encode(CONVERSATION, RESPONSE)
    assert ids == tokenizer(text, text_pair)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[:2] == ["[CLS]", "user"]
    assert ids.count(tokenizer.sep_token_id) == 2
    # Segment ids are rebuilt from the SEP positions exactly as the tokenizer gives them.
    from synpref.rm.scorer import model_inputs

    inputs = model_inputs([ids], tokenizer.pad_token_id, tokenizer.sep_token_id)
    assert inputs["token_type_ids"][0].tolist() == tokenizer(text, text_pair)["token_type_ids"]
