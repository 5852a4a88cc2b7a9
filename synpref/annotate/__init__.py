"""LLM annotation: attributes, pairwise judging and pre-verification (DESIGN.md Stage 1/2).

    config.py      `JobConfig` / `JudgeConfig`: the judges YAML file
    backends.py    judge backends in a registry: `openai` (any compatible server), `local`
    cache.py       `RequestCache`: responses keyed by request hash, under cache/llm/
    prompts/       the editable prompt templates (a workspace's prompts/ overrides them)
    tasks.py       `attributes`, `judge`, `preverify`: what to ask and how to read the answer
    parsing.py     JSON answers validated by pydantic, never guessed
    aggregate.py   self-consistency within a model, then majority or weighted across models
    store.py       append-only result logs (JSONL) and their Parquet snapshots
    runner.py      `run_job`: resumable, bounded-concurrency execution of a task
    judge_agreement.py  agreement with human gold labels, between judges, and position bias
    verifier_judge.py   `backend: verifier`: pairwise verdicts from a pair's reference answer,
                        checked by synpref.reward's rule verifiers in worker processes

Importing this package does not import openai or torch; the backends do when they start.
"""
