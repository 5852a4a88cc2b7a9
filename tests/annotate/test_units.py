"""Unit tests: answer parsing, the backend registry, retry timing, config, the result log."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from synpref.annotate.backends import (
    BACKENDS,
    Backend,
    ChatRequest,
    backoff_delay,
    create_backend,
    register_backend,
    retry_after_seconds,
)
from synpref.annotate.config import JobConfig, JudgeConfig, load_job_config
from synpref.annotate.parsing import InvalidAnswer, close_truncated, parse_answer
from synpref.annotate.store import ResultLog
from synpref.annotate.tasks import (
    TASKS,
    JudgeAnswer,
    PreverifyAnswer,
    TaskContext,
    load_guideline,
    prompt_environment,
)
from synpref.data.models import Attributes, Message, PreferencePair
from synpref.errors import SynprefError


def test_answers_are_found_in_prose_and_completed_when_cut_off():
    text = 'Sure! ```json\n{"preferred": "Candidate 2", "reason": "it is right"}\n``` Hope that helps {}'
    assert parse_answer(text, JudgeAnswer) == JudgeAnswer(preferred="Candidate 2", reason="it is right")
    assert parse_answer('{"correct": false, "reason": "12*12 is 14', PreverifyAnswer) == PreverifyAnswer(
        correct=False, reason="12*12 is 14"
    )
    assert close_truncated('{"a": ["x", "y\\') == '{"a": ["x", "y\\\\"]}'


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("Candidate 1", "no JSON object in the answer"),
        ('{"preferred": Candidate 1}', "the answer's JSON object is malformed"),
        ('{"preferred": "Candidate 3"}', "answer does not fit the schema: preferred: Input should be 'Candidate 1', 'Candidate 2' or 'tie'"),
        ('{"preferred": "Cand', "answer does not fit the schema: preferred: Input should be 'Candidate 1', 'Candidate 2' or 'tie'"),
        ('{"correct": true}', "answer does not fit the schema: reason: Field required"),
    ],
)
def test_malformed_answers_are_rejected_not_guessed(text, error):
    schema = PreverifyAnswer if "correct" in text else JudgeAnswer
    with pytest.raises(InvalidAnswer) as raised:
        parse_answer(text, schema)
    assert str(raised.value) == error


def test_attributes_answers_use_the_fixed_vocabulary():
    good = '{"task_category": "math", "objectivity": "objective", "controversiality": "low", "desired_attributes": ["right"], "guideline": "g"}'
    assert parse_answer(good, Attributes).task_category.value == "math"
    with pytest.raises(InvalidAnswer):
        parse_answer(good.replace('"math"', '"algebra"'), Attributes)


def test_registry_rejects_a_duplicate_backend_name():
    assert {"openai", "local"} <= set(BACKENDS)
    with pytest.raises(ValueError, match="judge backend 'openai' is already registered"):
        register_backend("openai")(type("Other", (Backend,), {}))


def test_retry_after_and_backoff():
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after_seconds({}) is None
    delays = [backoff_delay(attempt, base=1.0, cap=5.0) for attempt in range(6) for _ in range(50)]
    assert all(0 <= d <= 5.0 for d in delays) and len(set(delays)) > 250  # jittered, capped


def test_request_key_covers_what_decides_the_answer():
    base = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], temperature=0, max_tokens=8, seed=0)
    assert base.key() == ChatRequest(**base.model_dump()).key()
    for change in ({"model": "n"}, {"temperature": 0.5}, {"max_tokens": 9}, {"seed": 1}, {"messages": []}):
        assert base.model_copy(update=change).key() != base.key()


def test_judges_config_errors_name_the_field(tmp_path):
    path = tmp_path / "judges.yaml"
    path.write_text("judges:\n  - model: a\n  - model: a\n")
    with pytest.raises(SynprefError, match="judge names must be unique; repeated: a"):
        load_job_config(path)
    path.write_text("judges:\n  - model: a\n    concurency: 4\n")
    with pytest.raises(SynprefError, match=r"judges\.0\.concurency: Extra inputs are not permitted"):
        load_job_config(path)


def test_result_log_survives_a_torn_last_line(tmp_path):
    log = ResultLog(tmp_path / "samples.jsonl")
    log.append({"n": 1})
    with open(log.path, "ab") as file:
        file.write(b'{"n": 2, "cut')  # a writer killed mid-line
    log.append({"n": 3})
    assert log.read() == [{"n": 1}, {"n": 3}]


def test_importing_the_engine_loads_neither_openai_nor_torch():
    code = (
        "import sys, synpref, synpref.cli, synpref.annotate.runner, synpref.annotate.judge_agreement;"
        "print(sorted(m for m in ('openai', 'torch', 'transformers', 'jinja2') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


VALID_ANSWERS = {
    "attributes": {"task_category": "math", "objectivity": "objective", "controversiality": "low",
                   "desired_attributes": ["right"], "guideline": "g"},
    "judge": {"preferred": "tie", "reason": "same"},
    "preverify": {"correct": True, "reason": "checked"},
}
# What the local backend generates after each task's prefill, up to its stop string.
AFTER_PREFILL = {
    "attributes": ('math", "objectivity": "objective", "controversiality": "low", "desired_attributes": ["right"], "guideline": "g"}', VALID_ANSWERS["attributes"]),
    "judge": ('2"', {"preferred": "Candidate 2", "reason": ""}),
    "preverify": ('true, "reason": "checked"}', VALID_ANSWERS["preverify"]),
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_contract(name):
    """Every task renders its default template and reads a valid answer, with or without prefill."""
    task = TASKS[name]
    config = JobConfig(judges=[JudgeConfig(name="j")])
    prompts = prompt_environment()
    context = TaskContext(config=config, prompts=prompts, guideline=load_guideline(prompts))
    pair = PreferencePair(
        conversation=[Message(role="user", content="Hi?")],
        chosen=Message(role="assistant", content="Hello."),
        rejected=Message(role="assistant", content="Go away."),
        source="fixture",
    )
    units = task.units(pair, config.judges[0], context)
    assert units and all(u.pair_id == pair.id and u.messages[0][0] == "user" for u in units)
    answer = json.dumps(VALID_ANSWERS[name])
    assert parse_answer(answer, task.schema).model_dump(mode="json") == VALID_ANSWERS[name]
    generated, expected = AFTER_PREFILL[name]
    assert parse_answer(task.prefill + generated, task.schema).model_dump(mode="json") == expected
    assert generated.endswith(task.prefill_stop)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backend_contract(name):
    backend = BACKENDS[name]
    assert issubclass(backend, Backend) and backend.name == name
    assert backend.complete is not Backend.complete


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(SynprefError, match="judge 'x': unknown backend 'vllm'; known: local, openai"):
        create_backend(JudgeConfig(name="x", backend="vllm"))


def test_the_schema_sent_to_servers_bounds_every_free_string_and_list():
    from synpref.annotate.tasks import TASKS

    properties = TASKS["attributes"].response_schema()["properties"]
    assert properties["desired_attributes"] == {
        "items": {"type": "string", "maxLength": 32}, "title": "Desired Attributes", "type": "array", "maxItems": 4,
    }
    assert properties["guideline"] == {"title": "Guideline", "type": "string", "maxLength": 160}
    assert properties["objectivity"] == {"enum": ["objective", "subjective"], "title": "Objectivity", "type": "string"}
    judge = TASKS["judge"].response_schema()["properties"]
    assert judge["reason"] == {"default": "", "title": "Reason", "type": "string", "maxLength": 160}
    assert "maxLength" not in judge["preferred"]
