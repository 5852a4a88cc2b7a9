"""The three annotation tasks: what each asks a judge and how its answer is read.

A task turns a pair into `Unit`s, one per request a judge must answer (a sample, a
candidate order, a response), renders their prompts from the editable templates in
`prompts/` (a workspace's `prompts/` folder overrides any of them), and names the pydantic
schema its answers must fit.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict

from synpref.annotate.config import JobConfig, JudgeConfig
from synpref.data.models import Attributes, Message, PreferencePair, TaskCategory

PACKAGE_PROMPTS = Path(__file__).parent / "prompts"
Side = Literal["chosen", "rejected"]


class JudgeAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")  # an extra key is noise, not a wrong verdict

    preferred: Literal["Candidate 1", "Candidate 2", "tie"]
    reason: str = ""


class PreverifyAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    correct: bool
    reason: str


@dataclass(frozen=True)
class Unit:
    """One request to one judge about one pair; `part` tells a pair's units apart."""

    pair_id: str
    judge: str
    part: str
    messages: tuple[tuple[str, str], ...]  # (role, content): hashable and ordered
    sample: int = 0
    shown_order: Optional[tuple[Side, Side]] = None


@dataclass
class PairView:
    """A pair as a prompt shows it: the candidates in shown order, attributes if known."""

    conversation: list[Message]
    candidates: tuple[str, str]
    attributes: Optional[dict[str, Any]] = None
    preferred: str = ""  # examples only: the human label, as the candidate's name


@dataclass
class TaskContext:
    """What the tasks read besides the pair: config, templates, gold examples, attributes."""

    config: JobConfig
    prompts: Any  # a jinja2 Environment
    guideline: str = ""
    gold: list[PreferencePair] = field(default_factory=list)  # candidate examples
    attributes: dict[str, Attributes] = field(default_factory=dict)
    word_sets: dict[str, frozenset[str]] = field(default_factory=dict)  # memo for similar_examples


def prompt_environment(workspace_root: Path | None = None):
    """Templates from WORKSPACE/prompts/ where present, else the package's defaults."""
    import jinja2

    folders = [PACKAGE_PROMPTS] if workspace_root is None else [Path(workspace_root) / "prompts", PACKAGE_PROMPTS]
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(f) for f in folders]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        undefined=jinja2.StrictUndefined,  # a typo in an edited template fails loudly
        autoescape=False,  # prompts are plain text for a model, not HTML
    )


def load_guideline(prompts) -> str:
    """The human annotation guideline, minus its tool-use lines (DESIGN.md Stage 1, step 4):
    a judge without tools must not be told to use them."""
    text, _path, _uptodate = prompts.loader.get_source(prompts, "guideline.md")
    kept = [line for line in text.strip().splitlines() if not re.search(r"\btools?\b", line, re.IGNORECASE)]
    return "\n".join(kept)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def clipped(messages: list[Message], limit: int) -> list[Message]:
    return [Message(role=m.role, content=clip(m.content, limit)) for m in messages]


def candidate_order(seed: int, *names: Any) -> tuple[Side, Side]:
    """A random but reproducible order: the same job asks the same question on a rerun."""
    draw = random.Random(":".join(str(n) for n in (seed, *names))).random()
    return ("chosen", "rejected") if draw < 0.5 else ("rejected", "chosen")


def pair_view(pair: PreferencePair, order: tuple[Side, Side], context: TaskContext) -> PairView:
    limit = context.config.max_text_chars
    attributes = context.attributes.get(pair.id)
    return PairView(
        conversation=clipped(pair.conversation, limit),
        candidates=(clip(getattr(pair, order[0]).content, limit), clip(getattr(pair, order[1]).content, limit)),
        attributes=attributes.model_dump(mode="json") if attributes else None,
    )


def messages_of(prompt: str) -> tuple[tuple[str, str], ...]:
    return (("user", prompt.strip() + "\n"),)


class Task:
    name: ClassVar[str]
    schema: ClassVar[type[BaseModel]]
    # How the local backend starts each answer and where it stops: keeps a small model on
    # the format (SmolLM2 otherwise copies the format line of the prompt verbatim).
    prefill: ClassVar[str]
    prefill_stop: ClassVar[tuple[str, ...]] = ("}",)
    default_split: ClassVar[Optional[str]] = None

    def units(self, pair: PreferencePair, judge: JudgeConfig, context: TaskContext) -> list[Unit]:
        raise NotImplementedError

    def result_fields(self, unit: Unit, answer: BaseModel) -> dict[str, Any]:
        """Extra columns of a result record, derived from a valid answer."""
        return {}

    @classmethod
    def response_schema(cls) -> dict[str, Any]:
        """The JSON schema sent as `response_format`: the answer schema with every free string
        and list bounded, so a server that decodes under the schema must close the JSON within a
        few hundred tokens (a small model otherwise runs a string on until max_tokens)."""
        return bounded(cls.schema.model_json_schema())


# Bounds of the schema sent to servers: a worst case of ~450 characters of JSON for attributes,
# so max_tokens of 448 always closes the answer, even at one token per character.
MAX_STRING_CHARS = 160  # a reason or a guideline
MAX_ITEM_CHARS = 32  # a string in a list (a desired attribute)
MAX_LIST_ITEMS = 4


def bounded(schema: Any, *, in_list: bool = False) -> Any:
    """`schema` with maxLength on strings that have no enum and maxItems on arrays, recursively."""
    if isinstance(schema, list):
        return [bounded(item, in_list=in_list) for item in schema]
    if not isinstance(schema, dict):
        return schema
    is_array = schema.get("type") == "array"
    out = {key: bounded(value, in_list=is_array and key == "items") for key, value in schema.items()}
    if out.get("type") == "string" and "enum" not in out and "const" not in out:
        out.setdefault("maxLength", MAX_ITEM_CHARS if in_list else MAX_STRING_CHARS)
    if is_array:
        out.setdefault("maxItems", MAX_LIST_ITEMS)
    return out


class AttributesTask(Task):
    name = "attributes"
    schema = Attributes
    prefill = '{"task_category": "'

    def units(self, pair, judge, context):
        prompt = context.prompts.get_template("attributes.j2").render(
            conversation=clipped(pair.conversation, context.config.max_text_chars),
            categories=[c.value for c in TaskCategory],
        )
        return [Unit(pair.id, judge.name, "s0", messages_of(prompt))]


class JudgeTask(Task):
    name = "judge"
    schema = JudgeAnswer
    prefill = '{"preferred": "Candidate '
    prefill_stop = ('"',)  # the verdict is the one token after the prefill; the reason is optional
    default_split = "pool"

    def units(self, pair, judge, context):
        examples = similar_examples(pair, context.gold, context.config.examples, context.word_sets)
        units = []
        for sample in range(judge.samples):
            order = candidate_order(context.config.seed, pair.id, judge.name, sample)
            orders = [("", order)]
            if context.config.both_orders:
                orders.append(("-swapped", (order[1], order[0])))
            for suffix, shown in orders:
                prompt = render_judge_prompt(pair, shown, examples, context)
                units.append(Unit(pair.id, judge.name, f"s{sample}{suffix}", messages_of(prompt), sample, shown))
        return units

    def result_fields(self, unit, answer):
        if answer.preferred == "tie":
            return {"verdict": "tie"}
        return {"verdict": unit.shown_order[int(answer.preferred[-1]) - 1]}


class PreverifyTask(Task):
    name = "preverify"
    schema = PreverifyAnswer
    prefill = '{"correct": '

    def units(self, pair, judge, context):
        limit = context.config.max_text_chars
        template = context.prompts.get_template("preverify.j2")
        return [
            Unit(pair.id, judge.name, side, messages_of(template.render(
                conversation=clipped(pair.conversation, limit),
                response=clip(getattr(pair, side).content, limit),
            )))
            for side in ("chosen", "rejected")
        ]


TASKS: dict[str, Task] = {task.name: task for task in (AttributesTask(), JudgeTask(), PreverifyTask())}


def render_judge_prompt(
    pair: PreferencePair, order: tuple[Side, Side], examples: list[PreferencePair], context: TaskContext
) -> str:
    """The judge prompt: guideline, human-labelled examples with attributes, the target pair."""
    example_views = []
    for example in examples:
        # Examples are shuffled too, or the judge learns "the answer is Candidate 1".
        example_order = candidate_order(context.config.seed, "example", example.id)
        view = pair_view(example, example_order, context)
        view.preferred = f"Candidate {example_order.index('chosen') + 1}"  # gold: chosen won
        example_views.append(view)
    return context.prompts.get_template("judge.j2").render(
        guideline=context.guideline,
        examples=example_views,
        target=pair_view(pair, order, context),
    )


def similar_examples(
    pair: PreferencePair, gold: list[PreferencePair], count: int, memo: dict[str, frozenset[str]] | None = None
) -> list[PreferencePair]:
    """Up to `count` gold pairs whose conversations share the most words with this one.

    Word-set overlap (Jaccard) is a stand-in until the embedding retrieval of Stage 1 step 3
    lands; the pair itself is never its own example.
    """
    if count == 0 or not gold:
        return []
    memo = {} if memo is None else memo
    words = conversation_words(pair)
    scored = []
    for example in gold:
        if example.id == pair.id:
            continue
        if example.id not in memo:
            memo[example.id] = conversation_words(example)
        other = memo[example.id]
        overlap = len(words & other) / max(len(words | other), 1)
        scored.append((-overlap, example.id, example))
    return [example for _, _, example in sorted(scored, key=lambda item: item[:2])[:count]]


def conversation_words(pair: PreferencePair) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", " ".join(m.content for m in pair.conversation).lower()))
