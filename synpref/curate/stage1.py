"""Stage 1 iterations (DESIGN.md Stage 1, steps 2-5), each resumable.

    runs/stage1/seed.parquet        the starting silver: the silver split, else `seed_size` pool pairs
    runs/stage1/pool/, gold/        the pairs as Parquet shards, for the embedding jobs
    runs/stage1/iter-K/
      silver.parquet                what this iteration's RM trains on (pair rows, oriented by the verdicts)
      model/                        the RM, best checkpoint by gold accuracy
      gold_p.parquet                p = sigmoid(r_w - r_l) per gold pair
      retrieved.parquet             pool ids retrieved, with the gold pair that asked
      judgments.parquet             the judges' verdict per retrieved pair, and which kind decided
                                    it (decided_by: verifier | llm | "" unsure) with the verifier's reason
      human.parquet                 stage1.human_budget > 0: the undecided pairs sent to humans
      state.parquet                 every pair labelled so far (id, verdict, flipped, origin)
      summary.json                  written last: the iteration is finished
    WORKSPACE/label/requests/stage1-iter-K.json   those pairs, for the annotation app's queue

Labels come from three sources, recorded in each state row's origin: verifier judges (pairs
with a reference), LLM judges, and humans. With a human budget an iteration stops after
judging and waits ("waiting for N human labels") until every pair it sent is labelled and
exported from the app; the next run picks the labels up and finishes it. Pairs sent to humans
stay out of the gold the loop measures on (so gold accuracy compares across iterations), and
Stage 1's pool is fixed by its first iteration (a labelled pair moving to gold changes nothing).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from synpref.curate.config import CurateConfig
from synpref.curate.executors import run_shards, write_shards, write_table_atomic
from synpref.curate.jobs import EmbedJob
from synpref.curate.training import gold_probabilities, train_reward_model
from synpref.errors import SynprefError

SILVER_VERDICTS = ("chosen", "rejected", "seed")  # a verdict that gives the pair an orientation
DECIDED = ("chosen", "rejected")
SOURCES = {"verifier": "verifier", "llm": "LLM judges", "human": "human"}  # label source -> origin suffix


def stage1_dir(workspace) -> Path:
    return workspace.run_dir("stage1")


def finished_iterations(workspace) -> list[Path]:
    found = [p for p in stage1_dir(workspace).glob("iter-*") if (p / "summary.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def last_state(workspace) -> dict[str, Any]:
    """{"rows": state rows, "labelled": ids, "silver": {id: flipped}} after the last finished iteration."""
    import pyarrow.parquet as pq

    iterations = finished_iterations(workspace)
    source = iterations[-1] / "state.parquet" if iterations else stage1_dir(workspace) / "seed.parquet"
    rows = pq.read_table(source).to_pylist() if source.is_file() else []
    return {
        "rows": rows,
        "labelled": {r["id"] for r in rows},
        "silver": {r["id"]: r["flipped"] for r in rows if r["verdict"] in SILVER_VERDICTS},
    }


def silver_trained_on(workspace, iteration: Path) -> dict[str, bool]:
    """{id: flipped} of the silver an iteration's RM was trained on: the state before it."""
    import pyarrow.parquet as pq

    number = int(iteration.name.split("-")[1])
    before = stage1_dir(workspace) / (f"iter-{number - 1}/state.parquet" if number > 1 else "seed.parquet")
    rows = pq.read_table(before).to_pylist()
    return {r["id"]: r["flipped"] for r in rows if r["verdict"] in SILVER_VERDICTS}


def stage2_discarded(workspace) -> set[str]:
    """Pairs a Stage 2 run already discarded: never retrieved again."""
    import pyarrow.parquet as pq

    path = workspace.decisions_file
    if not path.is_file():
        return set()
    return {r["id"] for r in pq.read_table(path, columns=["id", "action"]).to_pylist() if r["action"] == "discard"}


def run_stage1(workspace, config: CurateConfig, *, iterations: int | None = None, log=print) -> list[dict[str, Any]]:
    """Run (or resume) iterations 1..N; returns every iteration's summary."""
    total = iterations or config.stage1.iterations
    sent = sent_to_humans(workspace)
    gold = [p for _, p in workspace.iter_pairs("gold") if not _labelled_for_stage1(p, sent)]
    if not gold:
        raise SynprefError("stage1: the workspace has no gold pairs (import human labels with --split gold)")
    _write_seed(workspace, config)
    summaries = []
    for number in range(1, total + 1):
        directory = stage1_dir(workspace) / f"iter-{number}"
        if (directory / "summary.json").is_file():
            summaries.append(json.loads((directory / "summary.json").read_text()))
            continue
        directory.mkdir(parents=True, exist_ok=True)
        summaries.append(_iteration(workspace, config, number, directory, gold, log))
        if summaries[-1].get("status") == "waiting":
            break  # the next run goes on from here, with the labels exported by then
    return summaries


def sent_to_humans(workspace) -> set[str]:
    """Ids of every pair a Stage 1 iteration sent to the annotation app."""
    import pyarrow.parquet as pq

    return {i for path in stage1_dir(workspace).glob("iter-*/human.parquet") for i in pq.read_table(path).column("id").to_pylist()}


def _labelled_for_stage1(pair, sent: set[str]) -> bool:
    label = pair.meta.get("label")
    return pair.id in sent or (isinstance(label, dict) and label.get("original_id") in sent)


def exported_labels(workspace, ids: set[str]) -> dict[str, str]:
    """{id: chosen | rejected | unsure} of the pairs in `ids` whose human label was exported
    from the app (synpref/label/export.py: the pair, or its swapped copy, joined gold or discarded)."""
    found = {}
    for split in ("gold", "discarded"):
        for _, pair in workspace.iter_pairs(split):
            label = pair.meta.get("label")
            if isinstance(label, dict) and label.get("original_id") in ids and label.get("verdict") in (*DECIDED, "unsure"):
                found[label["original_id"]] = label["verdict"]
    return found


def _write_seed(workspace, config: CurateConfig) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = stage1_dir(workspace) / "seed.parquet"
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    def ids(split: str):
        return (i for batch in workspace.batches(split, columns=["id"]) for i in batch.column("id").to_pylist())

    rows = [{"id": i, "verdict": "seed", "flipped": False, "origin": "silver split"} for i in ids("silver")]
    if not rows and config.stage1.seed_size:
        rows = [{"id": i, "verdict": "seed", "flipped": False, "origin": "pool seed"} for i, _ in zip(ids("pool"), range(config.stage1.seed_size))]
    if not rows:
        raise SynprefError("stage1: no silver to start from; ingest a silver split or set stage1.seed_size")
    write_table_atomic(pq, pa.Table.from_pylist(rows, schema=state_schema()), path)


def state_schema():
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("verdict", pa.string()), ("flipped", pa.bool_()), ("origin", pa.string())])


def _iteration(workspace, config: CurateConfig, number: int, directory: Path, gold, log) -> dict[str, Any]:
    started = time.perf_counter()
    state = last_state(workspace)
    excluded = state["labelled"] | stage2_discarded(workspace)
    silver = _silver(workspace, directory / "silver.parquet", state["silver"])
    log(f"stage1 iter-{number}: training on {len(state['silver']):,} silver pairs")
    training = train_reward_model(config, silver, directory / "model", gold=gold, workspace_root=workspace.root)
    probabilities = _gold_p(directory, config, gold, workspace.root, training.get("gold_rewards"))
    retrieved = _retrieve(workspace, config, directory, gold, probabilities, excluded, log)
    log(f"stage1 iter-{number}: gold accuracy {training['best_gold_accuracy']}, retrieved {len(retrieved)} pairs; judging")
    verdicts = _judge(workspace, config, directory, _pairs(workspace, retrieved), gold)
    sent = _send_to_humans(workspace, config, directory, verdicts, number)
    humans = exported_labels(workspace, set(sent))
    if len(humans) < len(sent):
        missing = len(sent) - len(humans)
        log(f"stage1 iter-{number}: waiting for {missing} human labels ({len(humans)} of {len(sent)} exported); "
            f"label them in the app (`synpref label serve`), export (`synpref label export`), then run stage1 again")
        return {"iteration": number, "status": "waiting", "waiting_for_human_labels": missing,
                "sent_to_humans": len(sent), "human_labels_exported": len(humans)}
    rows = _write_state(directory, state["rows"], verdicts, humans, number)
    counts = {v: sum(r.verdict == v for r in verdicts.values()) for v in ("chosen", "rejected", "unsure")}
    added_by = {source: sum(r["verdict"] in DECIDED and r["origin"] == f"iter-{number} {suffix}" for r in rows)
                for source, suffix in SOURCES.items()}
    summary = {
        "iteration": number, "silver_trained_on": len(state["silver"]), "gold_pairs": len(gold),
        "gold_accuracy": training["best_gold_accuracy"], "best_step": training["best_step"],
        "gold_p_mean": sum(probabilities) / len(probabilities), "retrieved": len(retrieved),
        "judged": counts, "added_to_silver": sum(added_by.values()), "added_by": added_by,
        "sent_to_humans": len(sent), "human_labels": {v: list(humans.values()).count(v) for v in (*DECIDED, "unsure")},
        "judge_agreement_mean": sum(r.agreement for r in verdicts.values()) / max(1, len(verdicts)),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (directory / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _silver(workspace, path: Path, silver: dict[str, bool]):
    """The silver pairs as a table of pair rows in state order (written once), chosen first: a
    pair the judges reversed has chosen and rejected exchanged. Gathered from the store, every
    split (a pair humans labelled has moved to gold)."""
    import pyarrow.parquet as pq

    if path.is_file():
        return pq.read_table(path)
    table = workspace.gather(list(silver), flipped=[i for i, flipped in silver.items() if flipped])
    write_table_atomic(pq, table, path)
    return table


def _pairs(workspace, ids: list[str]) -> list:
    """The stored pairs of `ids`, in that order (a step's few pairs, never the pool)."""
    from synpref.data.workspace import pair_from_row

    return [pair_from_row(row) for row in workspace.gather(ids).to_pylist()]


def _gold_p(directory: Path, config: CurateConfig, gold, workspace_root: Path, rewards=None) -> list[float]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = directory / "gold_p.parquet"
    if path.is_file():
        return pq.read_table(path).column("p").to_pylist()
    probabilities = gold_probabilities(str(directory / "model"), gold, config, workspace_root, rewards)
    write_table_atomic(pq, pa.table({"id": [p.id for p in gold], "p": probabilities}), path)
    return probabilities


def _retrieve(workspace, config: CurateConfig, directory: Path, gold, probabilities, excluded: set[str], log) -> list[str]:
    """Adaptive retrieval from the pool minus `excluded`; the gold pairs the RM gets most wrong
    ask first. The pool's vectors are read from their shards as the search needs them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synpref.retrieval.adaptive import adaptive_retrieve
    from synpref.retrieval.embed import read_embeddings
    from synpref.retrieval.neighbours import retrieve_neighbours

    path = directory / "retrieved.parquet"
    if path.is_file():
        return pq.read_table(path).column("id").to_pylist()
    gold_ids, gold_vectors = read_embeddings(_embeddings(workspace, config, "gold", [("gold", p) for p in gold]))
    pool = _embeddings(workspace, config, "pool", _pool_source(workspace))
    order = sorted(range(len(gold)), key=lambda i: (probabilities[i], gold[i].id))
    position = {pair_id: i for i, pair_id in enumerate(gold_ids)}
    queries = gold_vectors[[position[gold[i].id] for i in order]]
    neighbours = retrieve_neighbours(pool, excluded, queries, config.k_max, exact_max=config.exact_index_max, log=log)
    retrieved = adaptive_retrieve([probabilities[i] for i in order], neighbours, excluded, config.k_max)
    retrieved = retrieved[: config.stage1.max_retrieved] if config.stage1.max_retrieved else retrieved
    table = pa.table({"id": [pool_id for pool_id, _ in retrieved],
                      "gold_id": [gold[order[g]].id for _, g in retrieved],
                      "gold_p": [probabilities[order[g]] for _, g in retrieved]})
    write_table_atomic(pq, table, path)
    return table.column("id").to_pylist()


def _pool_source(workspace):
    """Stage 1's pool for `write_shards`: the pool split when the first iteration retrieves,
    then None (the shards in runs/stage1/pool/ as written), so that a pair humans labelled
    moving to gold does not change the retrieval index."""
    from synpref.curate.executors import MANIFEST

    if (stage1_dir(workspace) / "pool" / MANIFEST).is_file():
        return None
    return lambda columns: workspace.batches("pool", columns=columns)


def _embeddings(workspace, config: CurateConfig, split: str, rows) -> list[Path]:
    """The embedding shards of a split, embedded shard by shard into WORKSPACE/embeddings/<model>/<split>/."""
    from synpref.retrieval.embed import embeddings_dir

    shards = write_shards(rows, stage1_dir(workspace) / split, config.shard_size)
    output = embeddings_dir(workspace.work_root, config.embedder) / split
    run_shards(EmbedJob(config.embedder, str(workspace.root), config.embedding_dtype), shards, output, executor=config.executor, workers=config.ray_workers)
    return [output / s.name for s in shards]


def _judge(workspace, config: CurateConfig, directory: Path, retrieved, gold):
    """{id: PairVerdict} of the gated judges (verifier and LLM) for the retrieved pairs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synpref.curate.judging import PairVerdict, judge_pairs

    path = directory / "judgments.parquet"
    if path.is_file():
        table = pq.read_table(path).to_pylist()
        return {r["id"]: PairVerdict(r["verdict"], r["agreement"], r.get("decided_by") or ("llm" if r["verdict"] in DECIDED else ""),
                                     r.get("reason") or "") for r in table}
    job = judges_with_say(workspace, config, gold)
    verdicts = judge_pairs(workspace.root, retrieved, gold, job, directory / "judging") if job else {}
    verdicts = {p.id: verdicts.get(p.id, PairVerdict("unsure", 0.0, "")) for p in retrieved}
    table = pa.table({"id": list(verdicts), "verdict": [v.verdict for v in verdicts.values()],
                      "agreement": pa.array([v.agreement for v in verdicts.values()], pa.float64()),
                      "decided_by": [v.decided_by for v in verdicts.values()], "reason": [v.reason for v in verdicts.values()]})
    write_table_atomic(pq, table, path)
    return verdicts


def _send_to_humans(workspace, config: CurateConfig, directory: Path, verdicts, number: int) -> list[str]:
    """Ids of the pairs this iteration sends to humans (chosen once, then read back): up to
    `human_budget` pairs no judge decided, those the weakest gold pairs asked for first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = directory / "human.parquet"
    if path.is_file():
        return pq.read_table(path).column("id").to_pylist()
    budget = config.stage1.human_budget
    if not budget:
        return []
    retrieved = pq.read_table(directory / "retrieved.parquet").to_pylist()
    undecided = sorted((r for r in retrieved if verdicts[r["id"]].verdict not in DECIDED), key=lambda r: r["gold_p"])[:budget]
    ids = [r["id"] for r in undecided]
    if ids:  # the request first: a run killed between the two writes the same request again
        request = {"name": f"stage1-iter-{number}", "ids": ids, "annotations_wanted": config.stage1.human_annotations,
                   "requested_by": f"synpref curate stage1, iteration {number}"}
        workspace.label_requests_dir.mkdir(parents=True, exist_ok=True)
        target = workspace.label_requests_dir / f"stage1-iter-{number}.json"
        target.with_name(target.name + ".tmp").write_text(json.dumps(request, indent=2))
        target.with_name(target.name + ".tmp").replace(target)
    table = pa.table({"id": pa.array(ids, pa.string()), "gold_p": pa.array([r["gold_p"] for r in undecided], pa.float64())})
    write_table_atomic(pq, table, path)
    return ids


def judges_with_say(workspace, config: CurateConfig, gold) -> dict[str, Any] | None:
    """The judges file with each judge weighted by its measured gold agreement (None: no judge has a say)."""
    from synpref.curate.gating import gate_judges

    if config.judges is None:
        return None  # no judges configured: retrieved pairs stay unlabelled
    job = config.judges.model_dump(mode="json")
    if not config.judge_gate.enabled:
        return job
    gate = config.judge_gate
    directory = workspace.run_dir("judge-gate")
    return gate_judges(workspace.root, job, gold, directory, size=gate.calibration_pairs, alpha=gate.alpha, seed=gate.seed)[0]


def _write_state(directory: Path, previous: list[dict[str, Any]], verdicts, humans: dict[str, str], number: int) -> list[dict[str, Any]]:
    """The state after this iteration: each retrieved pair once, labelled by the humans where
    they labelled it, else by the judges; returns this iteration's rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for pair_id, judged in verdicts.items():
        verdict, source = (humans[pair_id], "human") if pair_id in humans else (judged.verdict, judged.decided_by or "llm")
        rows.append({"id": pair_id, "verdict": verdict, "flipped": verdict == "rejected", "origin": f"iter-{number} {SOURCES[source]}"})
    write_table_atomic(pq, pa.Table.from_pylist(previous + rows, schema=state_schema()), directory / "state.parquet")
    return rows
