"""Data: the contract, Stage 0, and the workspace that stores the pairs (DESIGN.md Stage 0).

    models.py      `PreferencePair`, `Message`, `Judgment`: the one data contract
    workspace.py   `Workspace`: synpref.yaml, the Parquet shards with their manifests, every path
    sources.py     where records come from: files (gzip or not) and Hugging Face datasets
    readers.py     input formats: one small reader class per format, in a registry
    strictjson.py  JSON as Stage 0 accepts it (no duplicate keys, no NaN)
    stage0.py      per record: parse, convert, validate, decontaminate (`PrepareConfig`)
    ingest.py      `synpref ingest`: sources into the workspace through Stage 0, resumably
    stats.py       `synpref stats`: counts by source, split, turns and length
    export.py      `synpref export`: the pairs in trainer formats (TRL, JSONL, Parquet, HF)
    sample.py      `synpref sample`: a small generated preference dataset
    vectors.py     vectors by key, computed once and kept on disk (features, embeddings)

Importing this package imports nothing heavy; pyarrow loads in the modules that need it.
"""
