"""A chat template rendered once per conversation shape: only where the template provably copies
contents, and then the same text as the template's own render, input by input."""

from __future__ import annotations

import jinja2
import pytest
from transformers import AutoTokenizer

from synpref.data.models import Message
from synpref.rm.formatting import RewardFormatter, reward_chat_template
from synpref.rm.template_shapes import content_is_verbatim

from .test_token_cache import varied_pairs

SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.mark.parametrize(
    ("template", "verbatim"),
    [
        (SMOLLM2, True),
        ("{% for m in messages[1:] %}{{ '<' + m.role + '>' ~ m.content }}{% endfor %}{{ messages | length }}", True),
        ("{% set ms = messages %}{% for m in ms %}{{ m.content if m.role == 'user' else 'x' + m.content }}{% endfor %}", True),
        ("{% for m in messages if m.role != 'system' %}{% if m is mapping %}{{ m['content'] }}{% endif %}{% endfor %}", True),
        ("{% for m in messages %}{{ messages[loop.index0 - 1]['content'] + messages[-1].content }}{% endfor %}", True),
        ("{% for m in messages %}{{ m['content'] | trim }}{% endfor %}", False),  # Llama 3
        ("{% set k = 'content' %}{% for m in messages %}{% if m[k] | length > 3 %}long{% endif %}{{ m.content }}{% endfor %}", False),
        ("{% for m in messages %}{{ m.content.split('</think>')[-1] }}{% endfor %}", False),  # Qwen3
        ("{% for m in messages %}{% if m.content %}{{ m.content }}{% endif %}{% endfor %}", False),
        ("{% set first = messages[0]['content'] %}{{ first }}", False),
        ("{{ messages | tojson }}", False),
        ("{% for m in messages %}{% for k, v in m.items() %}{{ v }}{% endfor %}{% endfor %}", False),
        ("{% for m in messages %}{{ m.get('content') }}{% endfor %}", False),
        ("{% set ms = messages %}{% for m in ms %}{{ m }}{% endfor %}", False),
        ("{% set r %}{% for m in messages %}{{ m.content }}{% endfor %}{% endset %}{{ r | upper }}", False),
        ("{% for m in messages %}{{ m.content }}{{ loop.previtem }}{% endfor %}", False),
        ("{% for m in messages %}{% if m == messages[0] %}x{% endif %}{{ m.content }}{% endfor %}", False),
        ("{% macro show(m) %}{{ m.content }}{% endmacro %}{% for m in messages %}{{ show(m) }}{% endfor %}", False),
        ("{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}", False),
        ("{% for m in messages %}{{ m.content", False),
    ],
)
def test_a_template_is_rendered_by_shape_only_where_contents_are_copied(template, verbatim):
    assert content_is_verbatim(template) is verbatim


def hostile_inputs() -> list[tuple[list[Message], Message]]:
    """The pool-like inputs, and contents that look like the shape markers, Jinja or chat tokens."""
    inputs = [(p.conversation, response) for p in varied_pairs() for response in (p.chosen, p.rejected)]
    user = lambda text: Message(role="user", content=text)  # noqa: E731
    assistant = lambda text: Message(role="assistant", content=text)  # noqa: E731
    inputs += [
        ([user("\x00synpref-slot-0\x00\x00synpref-slot-7\x00")], assistant("\x00synpref-slot-1\x00")),
        ([user("{{ messages }}{% for x in y %}")], assistant("{# #}")),
        ([Message(role="system", content="<|im_start|>system\nYou are a helpful AI assistant named SmolLM")], assistant(" \n")),
        ([user("")], assistant("")),
        ([user("<|im_end|>\n")], assistant("<|im_end|>\n\n")),
    ]
    return inputs


@pytest.fixture
def tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


def test_texts_by_shape_are_the_templates_texts(tokenizer):
    formatter = RewardFormatter(tokenizer, 1024)
    assert formatter._shapes is not None  # SmolLM2's template copies contents
    inputs = hostile_inputs()
    assert formatter.texts(inputs) == [formatter.text(conversation, response) for conversation, response in inputs]
    # The same through a saved model's tokenizer, whose template is already the reward template.
    tokenizer.chat_template = reward_chat_template(tokenizer)
    saved = RewardFormatter(tokenizer, 1024)
    assert saved._shapes is not None
    assert saved.texts(inputs) == formatter.texts(inputs)


def test_a_template_that_reads_contents_is_rendered_input_by_input(tokenizer):
    tokenizer.chat_template = SMOLLM2.replace("message['content']", "message['content'] | trim")
    formatter = RewardFormatter(tokenizer, 1024)
    assert formatter._shapes is None
    inputs = hostile_inputs()
    texts = formatter.texts(inputs)
    assert texts == [formatter.text(conversation, response) for conversation, response in inputs]
    assert texts[-1] == ("<|im_start|>user\n<|im_end|><|im_end|>\n<|im_start|>assistant\n<|im_end|><|im_end|>", None)


def test_a_shape_the_template_refuses_raises_its_error(tokenizer):
    tokenizer.chat_template = "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('a user speaks first') }}{% endif %}" + SMOLLM2
    formatter = RewardFormatter(tokenizer, 1024)
    assert formatter._shapes is not None
    good = ([Message(role="user", content="hi")], Message(role="assistant", content="hello"))
    bad = ([Message(role="assistant", content="hi")], Message(role="assistant", content="hello"))
    assert formatter.texts([good]) == [formatter.text(*good)]
    with pytest.raises(jinja2.TemplateError, match="a user speaks first"):
        formatter.texts([good, bad])
