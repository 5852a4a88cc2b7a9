"""synpref: curate preference data with humans and LLMs, train and evaluate reward models.

    data/       the data contract, Stage 0, ingest, and the workspace store (every path in it)
    annotate/   LLM judges: attributes, pairwise judging, pre-verification
    label/      the human annotation app (gold labels)
    retrieval/  embeddings and nearest neighbours
    rm/         reward models: load, format, score (in-process or through a server), train
    curate/     the curation loop: Stage 1 iterations, Stage 2 decisions, ablation, export
    eval/       `synpref eval`: the reward-model benchmarks, each scored by its authors' rules
    serve/      the reward server (its clients: `rm/remote.py`)
    reward/     rule-based verifiers beside the reward model (hybrid rewards)
    demo/       `synpref demo`: the whole loop on generated data
    cli.py      the `synpref` command; options.py builds each command from its config model
    config.py   YAML config files and --set; registry.py the one registry class; errors.py

Imports point down that stack (tests/test_house.py). Importing the package does no work: heavy
dependencies live in the subpackage that needs them.
"""

__version__ = "0.1.0"
