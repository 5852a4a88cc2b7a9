"""The curation loop (DESIGN.md Stage 1 steps 2-5 and Stage 2): noisy pool in, curated set out.

    config.py    CurateConfig: every option, its default and why, in one place
    decision.py  the Stage 2 keep / annotate / discard / flip rule, a pure function
    executors.py the pool as Parquet shards, and the executors (in-process, Ray) over them
    jobs.py      the per-shard functions: embed, score, judge
    judging.py   judging a given list of pairs: LLM judges (the annotation engine) and verifier judges
    training.py  RM training and gold p, shared by both stages
    stage1.py    iterations: train on silver, measure p on gold, retrieve, judge, send the rest to humans
    stage2.py    gold RM + best RM over the whole pool, then the rule; decisions with reasons
    report.py    Markdown/HTML report and PNG plots of a run
    export.py    curated, flipped and union sets in the export formats, with provenance
    known_answers.py  objective pairs with a known answer, for the noise-recovery bench and tests
"""
