"""Settings of the reward server; light to import (the CLI reads its help text from here)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ServeConfig(BaseModel):
    """Server settings (the CLI options of `synpref serve`).

    Optional fields are spelled `Optional[x]`: the CLI generator (`synpref.options`) reads
    `typing.Union`, not `x | None`, and would leave those options out."""

    model_config = ConfigDict(extra="forbid")

    max_batch_tokens: int = Field(16384, gt=0, description="tokens the worker gathers from waiting requests into one scoring call")
    model_batch_tokens: Optional[int] = Field(
        None, gt=0,
        description="tokens per forward pass, padding included (default: 16384 on a GPU, 1024 on CPU, where larger batches are slower)",
    )  # fmt: skip
    workers: int = Field(
        1, ge=0,
        description="HTTP worker processes in front of one model-owner process (0: HTTP and model in one process, "
        "where the model thread waits for the event loop's GIL)",
    )  # fmt: skip
    model_threads: Optional[int] = Field(
        None, gt=0,
        description="CPU threads of the model (default on CPU: one per core less one per HTTP process, at least 1, "
        "so the HTTP side never preempts the model's threads)",
    )  # fmt: skip
    max_wait_ms: float = Field(5.0, ge=0, description="longest a request waits for others to batch with")
    max_queue: int = Field(2048, gt=0, description="sequences waiting before requests get 503")
    max_body_bytes: int = Field(8 * 2**20, gt=0, description="largest request body")
    max_items: int = Field(512, gt=0, description="most conversations, responses or queries per request")
    request_timeout_s: float = Field(60.0, gt=0, description="time a request may wait for its scores")
    read_timeout_s: float = Field(
        10.0, gt=0, description="time a client has to send a request's headers, and again its body; slower connections are dropped",
    )  # fmt: skip
    api_keys: list[str] = Field(default_factory=list, description="accepted Bearer keys; empty: no auth")
    keyless_clients: list[str] = Field(
        default_factory=list,
        description="client addresses or networks (e.g. 10.0.0.0/8) that need no key: RLHF trainers on a trusted network, which send none",
    )  # fmt: skip

    reward_spec: Optional[Path] = Field(
        None, description="YAML reward spec: verifiers and how to combine them with the RM (synpref/reward/spec.py); /get_reward then reads labels",
    )  # fmt: skip
    log_dir: Optional[Path] = Field(
        None, description="folder for serve.log and the resolved reward spec (default: logs to stderr, the spec logged there)",
    )  # fmt: skip

    @field_validator("keyless_clients")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # a ValueError names the bad entry
        return value

