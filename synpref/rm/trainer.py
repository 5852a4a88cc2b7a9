"""Train a Bradley-Terry reward model: one loop, single process or under `accelerate launch`.

    OUTPUT/                     the best model (by gold accuracy; the last one without a gold
                                set) as a standard Hugging Face directory, plus
      synpref_train.yaml        the resolved config
      training_summary.json     steps, final loss, best gold accuracy and step, throughput
      metrics.jsonl             one line per logged step and per gold evaluation
      tensorboard/              the same metrics for TensorBoard
      checkpoints/step-N/       the latest resumable state: weights, optimizer, scheduler,
                                RNG states (accelerate) and trainer_state.json (step, best)

The data order of each epoch is a pure function of (seed, epoch), so the data position is
just the step count. With P processes, each optimizer step sees P x batch_size x
gradient_accumulation_steps pairs: every global micro-batch is built once and split by rank,
so 2 processes with batch 4 see exactly the batches of 1 process with batch 8.

Pairs are tokenized once into a memory-mapped Arrow file (`synpref.rm.token_cache`) that the
main process builds and every process opens; each process reads only the rows of its share.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synpref.errors import SynprefError
from synpref.rm.config import TrainConfig, save_resolved_config
from synpref.rm.data import as_pairs, epoch_batches, load_pairs
from synpref.rm.formatting import RewardFormatter
from synpref.rm.loss import bradley_terry_loss, pair_metrics
from synpref.rm.precision import MasterWeights
from synpref.rm.saving import with_gold_rewards, write_gold_rewards

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainState:
    """What a checkpoint adds to accelerate's own state: where we are and the best so far."""

    step: int = 0
    best_gold_accuracy: float | None = None
    best_step: int | None = None


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def train(config: TrainConfig, pairs: Any = None, gold: Any = None) -> dict[str, Any]:
    """Run training as configured; returns the summary also written to training_summary.json,
    with `gold_rewards` (chosen, rejected) of the gold pairs under the saved model when there
    is gold (also in OUTPUT/gold_rewards.parquet), so no caller loads the model to score them.

    `pairs`, when given, replaces `config.data`: a `pyarrow.Table`, a `pyarrow.dataset.Dataset`
    or an iterable of record batches with the workspace's pair columns (see `pair_chunks`).
    `gold`, when given, replaces `config.gold`: pairs, or a table of pair rows.
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from synpref.rm.models import load_reward_model

    config.validate(pairs_given=pairs is not None)
    if config.head_only:
        return train_head_only(config, pairs, gold)
    output = Path(config.output)
    # bf16 is ours (master weights, or autocast entered here), so that one process can train
    # with different settings in turn: accelerate fixes its precision once per process. fp16's
    # loss scaling and DeepSpeed's and FSDP's own bf16 schemes stay accelerate's.
    bf16 = config.mixed_precision == "bf16" and not _engine_owns_precision()
    # Without a GPU, say so: accelerate then runs several launched processes on CPU over gloo
    # (otherwise each process of `accelerate launch --multi_gpu` would train alone).
    accelerator = Accelerator(
        mixed_precision="no" if bf16 else config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        cpu=not torch.cuda.is_available(),
    )
    set_seed(config.seed)
    model, tokenizer = load_reward_model(config.model, seed=config.seed)
    if config.gradient_checkpointing:
        model.config.use_cache = False
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5 renamed it
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    formatter = RewardFormatter(tokenizer, max_length=config.max_length)
    encoded = _token_cache(config, pairs, formatter, accelerator)
    gold = _load_gold(config.gold) if gold is None else _gold_pairs(gold)

    global_batch = config.batch_size * accelerator.num_processes
    lengths = encoded.lengths()
    steps_per_epoch = len(encoded) // global_batch // config.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise SynprefError(f"{len(encoded)} pairs are fewer than one optimizer step's worth")
    total_steps = config.max_steps or steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_ratio * total_steps)

    master = MasterWeights(model) if bf16 and config.master_weights else None
    # Fused AdamW: one kernel over all parameters (CPU and CUDA), as transformers' Trainer defaults to.
    optimizer = torch.optim.AdamW(
        master.parameters if master else model.parameters(), lr=config.learning_rate,
        weight_decay=config.weight_decay, fused=True,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, warmup_steps=warmup_steps, total_steps=total_steps, schedule=config.lr_schedule),
    )
    from synpref.rm.packing import RewardForward, reward_reading

    # The readout is part of the prepared module, so DDP sees the whole forward pass.
    reading = reward_reading(model) if config.packing != "off" else None
    model, optimizer = accelerator.prepare(RewardForward(model, reading), optimizer)
    # Not prepared: accelerate would step a prepared scheduler once per process.
    accelerator.register_for_checkpointing(scheduler)
    if master:
        accelerator.register_for_checkpointing(master)
    state = _resume(accelerator, output) if config.resume else TrainState()
    if config.resume and accelerator.is_main_process:
        forget_metrics_after(output / "metrics.jsonl", state.step)

    run = _Run(config, accelerator, model, master, optimizer, scheduler, tokenizer, formatter, gold, output,
               autocast_bf16=bf16 and master is None, resumed_at=state.step if config.resume else None)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        save_resolved_config(config, output)
        accelerator.print(
            f"{len(encoded):,} pairs, {steps_per_epoch} steps per epoch of {global_batch * config.gradient_accumulation_steps} pairs "
            f"({len(encoded) - steps_per_epoch * global_batch * config.gradient_accumulation_steps} left out per epoch), {total_steps} steps"
        )
    batches, batches_epoch = [], None
    while state.step < total_steps:
        epoch, step_in_epoch = divmod(state.step, steps_per_epoch)
        if epoch != batches_epoch:  # the order is a function of (seed, epoch): resuming recomputes it
            batches = epoch_batches(lengths, global_batch, seed=config.seed, epoch=epoch, group_by_length=config.group_by_length)
            batches_epoch = epoch
        accumulation = config.gradient_accumulation_steps
        micro_batches = batches[step_in_epoch * accumulation : (step_in_epoch + 1) * accumulation]
        run.step(state, [_shard(b, accelerator) for b in micro_batches], encoded)
        state.step += 1
        run.after_step(state, total_steps)
    return run.finish(state, total_steps)


def train_head_only(config: TrainConfig, pairs: Any = None, gold: Any = None) -> dict[str, Any]:
    """`--head-only`: features from the frozen backbone (cached), a Bradley-Terry head fitted on
    them. The pairs are featurised together, so they are held (a training set, not a pool)."""
    from synpref.rm.features import FeatureSpec
    from synpref.rm.head import fit_head_model

    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    save_resolved_config(config, output)
    spec = FeatureSpec(config.model, config.max_length)
    pairs = load_pairs(config.data, config.split) if pairs is None else as_pairs(pairs)
    gold = _load_gold(config.gold) if gold is None else _gold_pairs(gold)
    return fit_head_model(pairs, output, spec, feature_cache_root(config), gold=gold, l2=config.l2)


def _token_cache(config: TrainConfig, pairs: Any, formatter: RewardFormatter, accelerator: Any):
    """The tokenized pairs: each node's main process builds the cache, then every process maps it."""
    from synpref.rm.token_cache import open_token_cache, token_cache_path

    # Pairs handed over in memory have no identity to name a shared file after: the run's own.
    root = token_cache_root(config) if pairs is None or config.token_cache else Path(config.output) / "token-cache"
    source, builder = config.data if pairs is None else pairs, accelerator.is_local_main_process
    if token_cache_path(root, source, config.split, formatter)[1] is not None:
        return open_token_cache(root, source, config.split, formatter, build=builder)  # the others poll for it
    # Rebuilt every run: the others must not open the previous run's file before the new one is in place.
    with accelerator.local_main_process_first():
        return open_token_cache(root, source, config.split, formatter, build=builder)


def token_cache_root(config: TrainConfig) -> Path:
    from synpref.rm.models import cache_dir

    if config.token_cache:
        return Path(config.token_cache)
    data = Path(config.data)
    if config.data and data.is_dir() and (data / "synpref.yaml").is_file():
        return data / "cache" / "tokens"
    return cache_dir() / "tokens"


def pair_rewards(model, pairs, *, packing: str, pad_token_id: int, separator: int | None, device):
    """(chosen, rejected) rewards of (chosen ids, rejected ids) pairs through a `RewardForward`.

    `packing` as in `TrainConfig`; a model whose head packing does not know is run padded. With
    "pairs", a pair becomes one tree (its prompt computed once) where the tree fits in the
    batch's longest sequence: dense-mask attention costs width x width per row, so wider rows
    would spend on attention what the shared prompt saves (measured in bench/RESULTS.md).
    """
    from synpref.rm.packing import pack, pair_items
    from synpref.rm.scorer import model_inputs

    reading = getattr(model, "module", model).reading  # DDP wraps the module
    if reading is None or packing == "off":
        inputs = model_inputs([c for c, _ in pairs] + [r for _, r in pairs], pad_token_id, separator)
        rewards = model({k: v.to(device) for k, v in inputs.items()})
        return rewards[: len(pairs)], rewards[len(pairs) :]
    width = max(len(ids) for pair in pairs for ids in pair)
    share = (lambda tree: len(tree) <= width) if packing == "pairs" and reading == "last" else None
    items, order = pair_items(pairs, share)
    packed = pack(items, reading=reading, pad_token_id=pad_token_id, separator=separator, width=width).to(device)
    rewards = model(packed.inputs, packed.read_index)[order.to(device)]
    return rewards[: len(pairs)], rewards[len(pairs) :]


def feature_cache_root(config: TrainConfig) -> Path:
    from synpref.rm.models import cache_dir

    if config.feature_cache:
        return Path(config.feature_cache)
    data = Path(config.data)
    if data.is_dir() and (data / "synpref.yaml").is_file():
        return data / "cache" / "features"
    return cache_dir() / "features"


def _engine_owns_precision() -> bool:
    """Whether `accelerate launch` runs DeepSpeed or FSDP, which apply bf16 their own way."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_DEEPSPEED") or parse_flag_from_env("ACCELERATE_USE_FSDP")


def _shard(global_batch: list[int], accelerator: Any) -> list[int]:
    size = len(global_batch) // accelerator.num_processes
    return global_batch[accelerator.process_index * size : (accelerator.process_index + 1) * size]


def _gold_pairs(gold: Any):
    pairs = as_pairs(gold)
    if not pairs:
        raise SynprefError("train: no gold pairs to evaluate on")
    return pairs


def _load_gold(spec: str | None):
    if spec is None:
        return None
    path = Path(spec)
    is_workspace = path.is_dir() and (path / "synpref.yaml").is_file()
    pairs = load_pairs(spec, "gold" if is_workspace else None)
    if not pairs:
        raise SynprefError(f"{spec}: no gold pairs to evaluate on")
    return pairs


def forget_metrics_after(path: Path, step: int) -> None:
    """Drop the lines of steps after `step` from metrics.jsonl: the interrupted run logged them
    after its last checkpoint, and the resumed run logs them again. A line cut short by the
    interruption does not parse and goes too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            logged = json.loads(line)
        except json.JSONDecodeError:
            continue
        if logged["step"] <= step:
            kept.append(line + "\n")
    draft = path.with_name(path.name + ".tmp")
    draft.write_text("".join(kept))
    draft.replace(path)


def _resume(accelerator: Any, output: Path) -> TrainState:
    checkpoints = sorted((output / CHECKPOINTS_DIR).glob("step-*"))
    if not checkpoints:
        raise SynprefError(f"--resume: no checkpoint in {output / CHECKPOINTS_DIR}")
    latest = checkpoints[-1]
    accelerator.load_state(str(latest))
    state = TrainState(**json.loads((latest / STATE_FILE).read_text()))
    accelerator.print(f"resumed from {latest} at step {state.step}")
    return state


def _tensorboard_installed(accelerator) -> bool:
    """TensorBoard comes with the `plots` extra; without it metrics.jsonl holds the same numbers."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        return True
    accelerator.print("TensorBoard logs skipped (metrics.jsonl has the same): they need the 'plots' extra: pip install 'synpref[plots]'")
    return False


class _Run:
    """The pieces of one training run, so the loop in `train` stays readable."""

    def __init__(self, config, accelerator, model, master, optimizer, scheduler, tokenizer, formatter, gold, output,
                 autocast_bf16, resumed_at: int | None = None):
        self.config, self.accelerator, self.model, self.master = config, accelerator, model, master
        self.autocast_bf16 = autocast_bf16
        self.optimizer, self.scheduler, self.tokenizer = optimizer, scheduler, tokenizer
        self.formatter, self.gold, self.output = formatter, gold, output
        self.window: dict[str, list] = {"loss": [], "chosen": [], "rejected": []}
        self.pairs_seen, self.train_seconds, self.last_loss = 0, 0.0, float("nan")
        from synpref.rm.scorer import segment_separator

        self.separator = segment_separator(self.reward_model, tokenizer)
        self.writer = None
        self.step_lr = float("nan")
        if config.tensorboard and accelerator.is_main_process and _tensorboard_installed(accelerator):
            from torch.utils.tensorboard import SummaryWriter

            # Resuming: TensorBoard drops the events the interrupted run wrote after its checkpoint.
            purge_step = None if resumed_at is None else resumed_at + 1
            self.writer = SummaryWriter(str(output / "tensorboard"), purge_step=purge_step)

    @property
    def reward_model(self):
        """The Hugging Face model inside the prepared `RewardForward`."""
        return self.accelerator.unwrap_model(self.model).model

    def _autocast(self):
        import torch

        if self.autocast_bf16:
            return torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16)
        return self.accelerator.autocast()

    def step(self, state: TrainState, micro_batches: list[list[int]], encoded) -> None:
        """One optimizer step over `micro_batches` (this process's share of each)."""
        started = time.perf_counter()
        self.model.train()
        for batch in micro_batches:
            # accelerate's accumulation: gradients are all-reduced, clipped and applied only on
            # the last micro-batch (the optimizer skips the others); the same code drives DDP
            # and DeepSpeed. `backward` divides the loss by the number of micro-batches.
            with self.accelerator.accumulate(self.model), self._autocast():
                chosen, rejected = self._rewards(batch, encoded)
                loss = bradley_terry_loss(
                    chosen, rejected, margin=self.config.margin, centering_coef=self.config.center_rewards_coef
                )
                self.accelerator.backward(loss)
                trained = self.model.parameters()
                if self.accelerator.sync_gradients and self.master:
                    self.master.gradients_to_master()
                    trained = self.master.parameters
                if self.accelerator.sync_gradients and self.config.max_grad_norm:
                    self.accelerator.clip_grad_norm_(trained, self.config.max_grad_norm)
                self.optimizer.step()
                if self.accelerator.sync_gradients and self.master:
                    self.master.master_to_model()
                self.optimizer.zero_grad(set_to_none=True)
            self._remember(loss.detach(), chosen.detach(), rejected.detach())
        self.step_lr = self.scheduler.get_last_lr()[0]  # the rate this step used; step() sets the next one
        self.scheduler.step()
        self.train_seconds += time.perf_counter() - started
        self.pairs_seen += sum(len(b) for b in micro_batches) * self.accelerator.num_processes

    def _rewards(self, batch: list[int], encoded):
        """Chosen and rejected of a batch in one forward pass; rewards in fp32."""
        pairs = encoded.pairs(batch)
        return pair_rewards(self.model, pairs, packing=self.config.packing, pad_token_id=self.tokenizer.pad_token_id,
                            separator=self.separator, device=self.accelerator.device)

    def _remember(self, loss, chosen, rejected) -> None:
        gather = self.accelerator.gather
        self.window["loss"].append(self.accelerator.reduce(loss, "mean").item())
        self.window["chosen"].append(gather(chosen).cpu())
        self.window["rejected"].append(gather(rejected).cpu())

    def after_step(self, state: TrainState, total_steps: int) -> None:
        config = self.config
        if state.step % config.log_every == 0 or state.step == total_steps:
            self._log(state.step, total_steps)
        if config.eval_every and state.step % config.eval_every == 0 and state.step < total_steps:
            self._evaluate(state)
        if config.save_every and state.step % config.save_every == 0 and state.step < total_steps:
            self._checkpoint(state)

    def _log(self, step: int, total_steps: int) -> None:
        import torch

        if not self.window["loss"]:
            return
        chosen, rejected = torch.cat(self.window["chosen"]), torch.cat(self.window["rejected"])
        # The mean over micro-batches of equal size is the mean over the steps' pairs.
        self.last_loss = sum(self.window["loss"]) / len(self.window["loss"])
        metrics = {"loss": self.last_loss, **pair_metrics(chosen, rejected)}
        metrics["lr"] = self.step_lr
        metrics["pairs_per_second"] = self.pairs_seen / max(self.train_seconds, 1e-9)
        self.window = {"loss": [], "chosen": [], "rejected": []}
        self._record(step, "train", metrics)
        self.accelerator.print(
            f"step {step}/{total_steps}  loss {metrics['loss']:.4f}  accuracy {metrics['accuracy']:.3f}  "
            f"margin {metrics['margin']:.3f}  reward {metrics['reward_mean']:.3f}±{metrics['reward_std']:.3f}  "
            f"lr {metrics['lr']:.2e}  {metrics['pairs_per_second']:.2f} pairs/s"
        )

    def _record(self, step: int, kind: str, metrics: dict[str, float]) -> None:
        if not self.accelerator.is_main_process:
            return
        with open(self.output / "metrics.jsonl", "a") as file:
            file.write(json.dumps({"step": step, "kind": kind, **metrics}) + "\n")
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(f"{kind}/{name}", value, step)
            self.writer.flush()

    def _evaluate(self, state: TrainState) -> None:
        """Gold accuracy (ties count as wrong); the best model so far is saved to OUTPUT."""
        if self.gold is None:
            return
        if self.accelerator.is_main_process:
            from synpref.rm.metrics import pairwise_accuracy
            from synpref.rm.scorer import RewardScorer

            scorer = RewardScorer(self.reward_model, self.tokenizer, max_length=self.config.max_length)
            with self._autocast():
                chosen, rejected = scorer.score_pairs(self.gold)
            accuracy = pairwise_accuracy(chosen, rejected)
            self._record(state.step, "gold", {"accuracy": accuracy})
            self.accelerator.print(f"step {state.step}  gold accuracy {accuracy:.4f} on {len(self.gold)} pairs")
            if state.best_gold_accuracy is None or accuracy > state.best_gold_accuracy:
                state.best_gold_accuracy, state.best_step = accuracy, state.step
                self._save_model()
                write_gold_rewards(self.output, chosen, rejected)
        self.accelerator.wait_for_everyone()
        # Every process keeps the same record of the best, so any rank's checkpoint is right.
        from accelerate.utils import broadcast_object_list

        best = broadcast_object_list([(state.best_gold_accuracy, state.best_step)], from_process=0)
        state.best_gold_accuracy, state.best_step = best[0]

    def _save_model(self) -> None:
        from synpref.rm.saving import save_reward_model

        model = self.reward_model
        # With master weights, the fp32 copies are the trained model.
        weights = self.master.full_precision_state_dict(model) if self.master else None
        save_reward_model(model, self.tokenizer, self.output, state_dict=weights)
        save_resolved_config(self.config, self.output)

    def _checkpoint(self, state: TrainState) -> None:
        directory = self.output / CHECKPOINTS_DIR / f"step-{state.step:08d}"
        self.accelerator.save_state(str(directory))
        if self.accelerator.is_main_process:
            (directory / STATE_FILE).write_text(json.dumps(state.__dict__))
            # Keep only the latest: a 135M-parameter checkpoint with AdamW state is ~1.6 GB.
            for old in sorted((self.output / CHECKPOINTS_DIR).glob("step-*"))[:-1]:
                shutil.rmtree(old)
        self.accelerator.wait_for_everyone()

    def finish(self, state: TrainState, total_steps: int) -> dict[str, Any]:
        if self.gold is not None:
            self._evaluate(state)
        elif self.accelerator.is_main_process:
            self._save_model()
        summary = {
            "steps": state.step,
            "final_loss": self.last_loss,
            "best_gold_accuracy": state.best_gold_accuracy,
            "best_step": state.best_step,
            "pairs_per_second": self.pairs_seen / max(self.train_seconds, 1e-9),
            "train_seconds": self.train_seconds,
            "processes": self.accelerator.num_processes,
        }
        if self.accelerator.is_main_process:
            (self.output / "training_summary.json").write_text(json.dumps(summary, indent=2))
            if self.writer is not None:
                self.writer.close()
        self.accelerator.wait_for_everyone()
        return with_gold_rewards(summary, self.output)
