"""Reward models: load, format, score and train Bradley-Terry reward models.

    models.py      loading by Hub id, path or embedded name; the pad-token fix
    formatting.py  the one input format for training, scoring and serving
    scorer.py      `RewardScorer`: inference in packed, length-sorted token-budget batches
    scorers.py     `load_scorer`: a saved model, a server URL or the length baseline -> a scorer
    remote.py      `RemoteScorer`: scoring through a reward server (synpref, OpenRLHF, vLLM, SGLang)
    packing.py     sequences back to back (per-sequence positions, block/tree masks); pair trees
    metrics.py     `pairwise_accuracy`, the one chosen-beats-rejected rule
    features.py    frozen-backbone features, cached per input (head-only RMs)
    head.py        the Bradley-Terry head on cached features; saving it for standard tools
    loss.py        the Bradley-Terry loss with margin and reward centering
    config.py      `TrainConfig`, the one source of the CLI options and YAML keys
    data.py        preference pairs in, length-grouped batches out
    trainer.py     the training loop (single process or `accelerate launch`)

Importing this package does not import torch; the modules do.
"""
