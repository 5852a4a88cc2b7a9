"""One input format everywhere (issue 16, acceptance 1): for both embedded backbones, saved by
`save_reward_model`, 20 conversations (1-3 turns, with and without a system message) score the
same within 1e-5 through /v1/score, /get_reward with the query an RLHF trainer builds from the
saved tokenizer, plain transformers, the Skywork-Reward-V2 model-card recipe and /classify in
vLLM's and SGLang's shapes (plus /v1/embeddings, veRL's SGLang route).

MiniLM has no chat template: its "query" is the documented text pair joined by [SEP]
(`RewardFormatter.joined_text`), its plain-transformers input the text pair itself.
"""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("torch")

from tests.conftest import live_server  # noqa: E402

TOLERANCE = 1e-5
BACKBONES = ("smollm2-135m", "minilm-l6")


def conversations() -> list[list[dict]]:
    """20 conversations: 1, 2 or 3 user turns, every other one opening with a system message."""
    result = []
    for index in range(20):
        turns = 1 + index % 3
        messages = [{"role": "system", "content": f"You are terse (rule {index})."}] if index % 2 else []
        for turn in range(turns):
            messages.append({"role": "user", "content": f"Question {index}.{turn}: what is {index} + {turn}?"})
            messages.append({"role": "assistant", "content": f"It is {index + turn}." + " Sure." * (index % 4)})
        result.append(messages)
    return result


CONVERSATIONS = conversations()


@pytest.fixture(scope="module", params=BACKBONES)
def saved(request, tmp_path_factory):
    """(directory, tokenizer, model) of a backbone with a seeded head, saved as synpref saves."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from synpref.rm.models import load_reward_model
    from synpref.rm.saving import save_reward_model

    directory = tmp_path_factory.mktemp(request.param)
    model, tokenizer = load_reward_model(request.param, seed=0)
    save_reward_model(model, tokenizer, directory)
    plain = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    return directory, AutoTokenizer.from_pretrained(directory), plain


@pytest.fixture(scope="module")
def served(saved):
    """(base URL, /v1/score's scores of CONVERSATIONS) for the saved model."""
    from synpref.rm.scorer import RewardScorer
    from synpref.serve.app import create_app

    scorer = RewardScorer.from_pretrained(str(saved[0]), device="cpu")
    with live_server(create_app(scorer, model_name="rm")) as url:
        reference = httpx.post(f"{url}/v1/score", json={"conversations": CONVERSATIONS}, timeout=120)
        assert reference.status_code == 200
        yield url, reference.json()["scores"]


def is_encoder(tokenizer) -> bool:
    return not tokenizer.chat_template


def text_pair(conversation: list[dict]) -> tuple[str, str]:
    """The encoder format (README, "Reward-model input format")."""
    prompt = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in conversation[:-1])
    return prompt, conversation[-1]["content"]


def openrlhf_query(tokenizer, conversation: list[dict]) -> str:
    """What OpenRLHF's SingleTurnAgentExecutor sends: the prompt rendered with a generation prompt,
    tokenized without special tokens, the sampled reply's ids ending in EOS, decoded as one text."""
    if is_encoder(tokenizer):
        prompt, response = text_pair(conversation)
        return prompt + tokenizer.sep_token + response
    prompt = tokenizer.apply_chat_template(conversation[:-1], tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(conversation[-1]["content"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return tokenizer.decode(prompt_ids + reply_ids, skip_special_tokens=False)


def skywork_text(tokenizer, conversation: list[dict]) -> str:
    """The Skywork-Reward-V2 model card: render, then strip "the duplicate BOS"."""
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    if tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token):
        text = text[len(tokenizer.bos_token) :]
    return text


def engine_text(tokenizer, conversation: list[dict]) -> str:
    if is_encoder(tokenizer):
        prompt, response = text_pair(conversation)
        return prompt + tokenizer.sep_token + response
    return skywork_text(tokenizer, conversation)


def test_get_reward_with_the_query_a_trainer_builds(saved, served):
    url, expected = served
    queries = [openrlhf_query(saved[1], c) for c in CONVERSATIONS]
    answer = httpx.post(f"{url}/get_reward", json={"query": queries, "prompts": [""] * 20, "labels": [None] * 20}, timeout=120)
    assert answer.status_code == 200
    assert answer.json()["rewards"] == pytest.approx(expected, abs=TOLERANCE)
    assert answer.json()["scores"] == pytest.approx(expected, abs=TOLERANCE)
    assert answer.json()["extra_logs"]["truncated"] == [0.0] * 20


def test_plain_transformers_with_apply_chat_template(saved, served):
    import torch

    _, tokenizer, model = saved
    scores = []
    for conversation in CONVERSATIONS:
        if is_encoder(tokenizer):
            inputs = tokenizer(*text_pair(conversation), return_tensors="pt")
        else:
            inputs = tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            scores.append(model(**inputs).logits[0][0].item())
    assert scores == pytest.approx(served[1], abs=TOLERANCE)


def test_the_skywork_model_card_recipe(saved, served):
    import torch

    _, tokenizer, model = saved
    if is_encoder(tokenizer):
        pytest.skip("the model card's recipe is for chat models; MiniLM has no chat template")
    scores = []
    for conversation in CONVERSATIONS:
        inputs = tokenizer(skywork_text(tokenizer, conversation), return_tensors="pt")
        with torch.no_grad():
            scores.append(model(**inputs).logits[0][0].item())
    assert scores == pytest.approx(served[1], abs=TOLERANCE)


def test_classify_in_vllm_shape_as_verl_sends_it(saved, served):
    url, expected = served
    scores = []
    for conversation in CONVERSATIONS:
        body = {"model": str(saved[0]), "input": engine_text(saved[1], conversation), "activation": False}
        answer = httpx.post(f"{url}/classify", json=body, timeout=60).json()
        scores.append(answer["data"][-1]["probs"][-1])
    assert scores == pytest.approx(expected, abs=TOLERANCE)


def test_classify_in_sglang_shape_as_the_model_card_client_sends_it(saved, served):
    url, expected = served
    texts = [engine_text(saved[1], c) for c in CONVERSATIONS]
    answer = httpx.post(f"{url}/classify", json={"model": str(saved[0]), "text": texts}, timeout=120).json()
    assert [row["embedding"][0] for row in answer] == pytest.approx(expected, abs=TOLERANCE)


def test_embeddings_as_verl_sends_them_to_sglang(saved, served):
    url, expected = served
    texts = [engine_text(saved[1], c) for c in CONVERSATIONS[:5]]
    scores = [httpx.post(f"{url}/v1/embeddings", json={"model": "m", "input": t}, timeout=60).json()["data"][-1]["embedding"][-1]
              for t in texts]  # fmt: skip
    assert scores == pytest.approx(expected[:5], abs=TOLERANCE)


def test_rewardbench_formatting_gives_the_ids_synpref_trains_on(saved):
    """rewardbench renders with the chat template (`tokenize=False`) and tokenizes the text in its
    pipeline; the ids equal those of synpref's trainer, which formats with the base tokenizer."""
    from transformers import AutoTokenizer

    from synpref.data.models import Message
    from synpref.rm.formatting import RewardFormatter
    from synpref.rm.models import resolve_model_path

    tokenizer = saved[1]
    if is_encoder(tokenizer):
        pytest.skip("rewardbench needs a chat template; MiniLM has none")
    base = RewardFormatter(AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m")))
    for conversation in CONVERSATIONS:
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
        assert tokenizer(text)["input_ids"] == base.encode_messages([Message(**m) for m in conversation])
