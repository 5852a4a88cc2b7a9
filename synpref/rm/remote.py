"""Scorers behind HTTP, for any `--model http://...` (`synpref.rm.scorers.load_scorer`): the same
numbers, a remote model.

- `synpref`: a `synpref serve` server; conversations go as messages to POST /v1/score.
- `openrlhf`: any server speaking OpenRLHF's POST /get_reward (`{"query": [text]}` ->
  `{"rewards": [...]}`), `synpref serve` included; texts are formatted here with the reward
  model's tokenizer (`tokenizer=`), exactly as `RewardScorer` formats them.
- `vllm`: a vLLM server's POST /classify (`{"model", "input": [text]}` -> `data[i].probs[0]`,
  with `truncate_prompt_tokens: -1` so that over-long inputs are cut, not refused);
- `sglang`: an SGLang server's native POST /classify with token ids (`{"model", "input_ids"}`
  -> `[{"embedding": [score]}]`); ids rather than texts because SGLang refuses an over-long
  text, and ids cut here are cut exactly as a local `RewardScorer` cuts them.
Both format with the reward model's tokenizer too; `synpref serve` speaks all four.
"""

from __future__ import annotations

import httpx

from synpref.data.models import Message, PreferencePair
from synpref.errors import SynprefError

PROTOCOLS = ("synpref", "openrlhf", "vllm", "sglang")
# Protocols whose inputs are formatted on this side, with the reward model's tokenizer.
FORMATTED_HERE = ("openrlhf", "vllm", "sglang")


class RemoteScorer:
    def __init__(
        self,
        url: str,
        protocol: str = "synpref",
        tokenizer: str | None = None,
        api_key: str | None = None,
        batch_size: int = 64,
        timeout: float = 600,
    ):
        if protocol not in PROTOCOLS:
            raise SynprefError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        self.url = url.rstrip("/")
        self.protocol = protocol
        self.batch_size = batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(timeout=timeout, headers=headers)
        self.formatter = None
        if protocol in FORMATTED_HERE:
            if tokenizer is None:
                raise SynprefError(f"the {protocol} protocol sends formatted inputs: pass the model's tokenizer (--tokenizer)")
            from transformers import AutoTokenizer

            from synpref.rm.formatting import RewardFormatter
            from synpref.rm.models import resolve_model_path

            self.formatter = RewardFormatter(AutoTokenizer.from_pretrained(resolve_model_path(tokenizer)))
        self.model = "reward-model"
        if protocol in ("vllm", "sglang"):
            # vLLM refuses a request naming another model than the one it serves
            served = self._served_model()
            self.model = served["id"]
            if protocol == "sglang":  # ids are cut here, so to the server's limit
                self.formatter.max_length = min(self.formatter.max_length, served.get("max_model_len") or self.formatter.max_length)

    def score(self, conversations: list[list[Message]]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(conversations), self.batch_size):
            scores += self._post(conversations[start : start + self.batch_size])
        return scores

    def score_pairs(self, pairs: list[PreferencePair]) -> tuple[list[float], list[float]]:
        """(chosen rewards, rejected rewards), as a local scorer's `score_pairs` gives them."""
        conversations = [[*p.conversation, p.chosen] for p in pairs] + [[*p.conversation, p.rejected] for p in pairs]
        rewards = self.score(conversations)
        return rewards[: len(pairs)], rewards[len(pairs) :]

    def _post(self, batch: list[list[Message]]) -> list[float]:
        path, body = self._request(batch)
        try:
            response = self.http.post(self.url + path, json=body)
        except httpx.HTTPError as error:
            raise SynprefError(f"reward server {self.url}: {error}") from None
        if response.status_code != 200:
            raise SynprefError(f"reward server {self.url}{path}: HTTP {response.status_code}: {response.text[:300]}")
        return _scores(self.protocol, response.json())

    def _served_model(self) -> dict:
        """The first model card of GET /v1/models (vLLM, SGLang and synpref list theirs there)."""
        try:
            return self.http.get(self.url + "/v1/models").json()["data"][0]
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as error:
            raise SynprefError(f"reward server {self.url}/v1/models: {error!r}") from None

    def _request(self, batch: list[list[Message]]) -> tuple[str, dict]:
        """(path, JSON body) of one batch in this scorer's protocol."""
        if self.protocol == "synpref":
            # cut over-long inputs, as a local `RewardScorer` does, rather than have the server refuse them
            return "/v1/score", {"conversations": [[m.model_dump() for m in c] for c in batch], "truncate": True}
        if self.protocol == "sglang":
            return "/classify", {"model": self.model, "input_ids": [self.formatter.encode(c[:-1], c[-1]) for c in batch]}
        texts = [self.formatter.joined_text(c[:-1], c[-1]) for c in batch]
        if self.protocol == "vllm":
            return "/classify", {"model": self.model, "input": texts, "truncate_prompt_tokens": -1}
        return "/get_reward", {"query": texts}


def _scores(protocol: str, answer) -> list[float]:
    if protocol == "synpref":
        return answer["scores"]
    if protocol == "openrlhf":
        return answer["rewards"]
    if protocol == "vllm":
        return [row["probs"][0] for row in sorted(answer["data"], key=lambda row: row["index"])]
    return [row["embedding"][0] for row in answer]
