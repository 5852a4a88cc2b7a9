"""Hybrid rewards for RL: rule-based verifiers beside the reward model, combined by a spec.

`verifiers` (the registry), `spec` (the validated YAML), `combine` (one reward from the two),
`offline` (`synpref reward score`). Nothing here imports torch.
"""
