"""The human annotation app: the gold-labelling workbench of Stage 1 (DESIGN.md, step 1).

    db.py          SQLAlchemy tables (users, queue, judgments, attribute edits, skips); all
                   append-only except the queue; SQLite by default, any SQLAlchemy URL
    users.py       accounts and roles; argon2 password hashes
    work_queue.py  loading pairs from the workspace, what each annotator sees next, submitting
    annotator_agreement.py  Cohen's kappa per pair of annotators, Krippendorff's alpha overall
    export.py      the gold set: JSONL in the original orientation, and back into the workspace
    render.py      model text as safe Markdown (all HTML escaped, unsafe links dropped)
    app.py         the FastAPI app: server-rendered pages, sessions, CSRF, role checks

Importing this package does not import fastapi or sqlalchemy; its modules do.
"""
