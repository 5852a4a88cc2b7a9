"""Scorers behind HTTP, for `synpref eval --model http://...`: the same numbers, a remote model.

- `synpref`: a `synpref serve` server; conversations go as messages to POST /v1/score.
- `openrlhf`: any server speaking OpenRLHF's POST /get_reward (`{"query": [text]}` ->
  `{"rewards": [...]}`), `synpref serve` included; texts are formatted here with the reward
  model's tokenizer (`tokenizer=`), exactly as `RewardScorer` formats them.
"""

from __future__ import annotations

import httpx

from synpref.data.models import Message
from synpref.errors import SynprefError

PROTOCOLS = ("synpref", "openrlhf")


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
        if protocol == "openrlhf":
            if tokenizer is None:
                raise SynprefError("the openrlhf protocol sends formatted texts: pass the model's tokenizer (--tokenizer)")
            from transformers import AutoTokenizer

            from synpref.rm.formatting import RewardFormatter
            from synpref.rm.models import resolve_model_path

            self.formatter = RewardFormatter(AutoTokenizer.from_pretrained(resolve_model_path(tokenizer)))

    def score(self, conversations: list[list[Message]]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(conversations), self.batch_size):
            scores += self._post(conversations[start : start + self.batch_size])
        return scores

    def _post(self, batch: list[list[Message]]) -> list[float]:
        if self.protocol == "synpref":
            # cut over-long inputs, as a local `RewardScorer` does, rather than have the server refuse them
            body = {"conversations": [[m.model_dump() for m in c] for c in batch], "truncate": True}
            path, key = "/v1/score", "scores"
        else:
            body = {"query": [self.formatter.text(c[:-1], c[-1])[0] for c in batch]}
            path, key = "/get_reward", "rewards"
        try:
            response = self.http.post(self.url + path, json=body)
        except httpx.HTTPError as error:
            raise SynprefError(f"reward server {self.url}: {error}") from None
        if response.status_code != 200:
            raise SynprefError(f"reward server {self.url}{path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json()[key]
