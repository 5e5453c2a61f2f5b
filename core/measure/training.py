"""The one training loop, for training, fine-tuning and distillation.

Progress leaves the loop as `TrainEvent`s passed to `on_event`; the loop never knows who listens
(a CLI progress bar, the job database, a test). `should_stop()` is polled once per batch; when it
returns True the loop raises `Cancelled`. With `early_stop` the loop ends once validation accuracy has
not improved for that many epochs; with `restore_best` the model ends holding the weights of its best
epoch by validation accuracy, the starting weights counted as epoch 0 (so fine-tuning never ends
below where it started on the validation split). On CUDA the data is moved to the GPU once and the forward
pass runs under autocast (bf16 when supported, else fp16 with a GradScaler).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as tprune

from core.base.cancel import Cancelled  # noqa: F401  (re-exported: the loop raises it)
from core.base.config import DictConfig
from core.data.types import Dataset
from core.measure.lane import device_label
from core.measure.metrics import accuracy, resolve_device

OPTIMIZERS = ("sgd", "adam", "adamw")
MAX_EPOCHS, MAX_BATCH, MAX_LR = 1000, 65_536, 10.0   # beyond these a run is a mistake, not a setting
SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class TrainConfig(DictConfig):
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0
    device: str = "auto"
    amp: bool = True           # only used on CUDA
    label_smoothing: float = 0.0
    log_every: int = 20        # batches between batch_end events
    early_stop: int | None = None  # patience: end after this many epochs without a better val accuracy
    restore_best: bool = False     # end with the best epoch's weights (epoch 0: the starting weights)

    def __post_init__(self):
        for name, lo, hi in (("epochs", 1, MAX_EPOCHS), ("batch_size", 1, MAX_BATCH), ("log_every", 1, 1_000_000)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"{name} must be a whole number from {lo} to {hi:,}, got {v!r}")
        if not isinstance(self.lr, (int, float)) or not (0 < self.lr <= MAX_LR and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a number above 0 and at most {MAX_LR:g}, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError("weight_decay must be >= 0, momentum and label_smoothing in [0, 1)")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        es = self.early_stop
        if es is not None and (not isinstance(es, int) or isinstance(es, bool) or not 1 <= es <= MAX_EPOCHS):
            raise ValueError(f"early_stop must be a whole number of epochs from 1 to {MAX_EPOCHS:,} (or None: "
                             f"never stop early), got {es!r}")
        if not isinstance(self.restore_best, bool):
            raise ValueError(f"restore_best must be true or false, got {self.restore_best!r}")




@dataclass
class TrainEvent:
    kind: str                  # "start" | "batch_end" | "epoch_end" | "early_stop" | "end"
    epoch: int                 # 1-based epoch the event belongs to
    epochs: int
    step: int                  # optimizer steps done so far
    total_steps: int
    loss: float | None = None  # mean training loss since the last event of this kind
    accuracy: float | None = None  # training accuracy over the same batches
    val_accuracy: float | None = None
    lr: float | None = None
    samples_per_s: float | None = None
    elapsed_s: float = 0.0
    device: str = ""
    best_epoch: int | None = None  # early_stop and end events, when the best epoch is tracked

    @property
    def progress(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one dict per epoch run
    val_accuracy: float = 0.0      # of the weights the model holds at the end (the best epoch's when restored)
    seconds: float = 0.0
    device: str = ""
    best_epoch: int = 0            # 1-based epoch with the best val accuracy; 0: the starting weights
    stopped_early: bool = False
    start_val_accuracy: float | None = None  # before training (measured with early_stop or restore_best)
    restored: bool = False         # the weights were set back to those of `best_epoch`


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    def loss_fn(model, x, y):
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits
    return loss_fn


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
    if cfg.schedule == "step":  # x0.1 at 50% and 75% of training
        return torch.optim.lr_scheduler.MultiStepLR(opt, [int(total_steps * 0.5), int(total_steps * 0.75)], 0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype), dtype
    return torch.autocast(device.type, enabled=False), None


def train_(model: nn.Module, data: Dataset, cfg: TrainConfig, *, on_event: Callable[[TrainEvent], None] | None = None,
           should_stop: Callable[[], bool] | None = None, loss_fn: LossFn | None = None,
           extra_modules: list[nn.Module] | None = None) -> TrainResult:
    """Train `model` IN PLACE on `data.train` (moved to the config's device, weights changed, left
    in eval mode); validate on `data.val` after each epoch. Callers pass a private model: a fresh
    one, or a copy, never a cached or shared one.

    `loss_fn(model, x, y) -> (loss, logits)` replaces cross-entropy (distillation uses it);
    `extra_modules` (a teacher, say; also private) are moved to the same device and kept in eval mode."""
    device = resolve_device(cfg.device)
    dev_name = device_label(device, threads=torch.get_num_threads())   # training's own threads, not the lane's
    emit = on_event or (lambda e: None)
    stop = should_stop or (lambda: False)
    loss_fn = loss_fn or cross_entropy_loss(cfg.label_smoothing)
    model.to(device)
    for m in extra_modules or []:
        m.to(device).eval()
    # GPU-resident data: one copy up front instead of a transfer per batch
    train_split = data.train.to(device) if device.type == "cuda" else data.train
    val_split = data.val.to(device) if device.type == "cuda" else data.val

    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = train_split.num_batches(cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = make_optimizer(model, cfg)
    sched = make_schedule(opt, cfg, total)
    autocast, amp_dtype = _autocast(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    result = TrainResult(device=dev_name)
    t_start = time.perf_counter()
    step = 0
    # best-epoch tracking: the starting weights are epoch 0, so a run that only makes things worse
    # ends (with restore_best) exactly where it started
    track = cfg.restore_best or cfg.early_stop is not None
    best_acc, best_state, since_best = -1.0, None, 0
    if track:
        result.start_val_accuracy = best_acc = accuracy(model, val_split, device)
        if cfg.restore_best:
            best_state = _snapshot(model)
    emit(TrainEvent("start", 1, cfg.epochs, 0, total, lr=cfg.lr, val_accuracy=result.start_val_accuracy,
                    device=dev_name))
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        ep_loss = torch.zeros((), device=device)
        ep_correct = torch.zeros((), dtype=torch.long, device=device)
        ep_seen = 0
        win_loss = torch.zeros((), device=device)
        win_correct = torch.zeros((), dtype=torch.long, device=device)
        win_seen, win_t0 = 0, time.perf_counter()
        t_epoch = time.perf_counter()
        for x, y in train_split.batches(cfg.batch_size, shuffle=True, generator=gen):
            if stop():
                raise Cancelled(f"cancelled at step {step} of {total}")
            with autocast:
                loss, logits = loss_fn(model, x, y)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            sched.step()
            step += 1
            # accumulate on-device; a host sync happens only when an event is emitted
            bl = loss.detach() * y.shape[0]
            bc = (logits.detach().argmax(1) == y).sum()
            ep_loss += bl
            ep_correct += bc
            win_loss += bl
            win_correct += bc
            ep_seen += y.shape[0]
            win_seen += y.shape[0]
            if step % cfg.log_every == 0:
                now = time.perf_counter()
                emit(TrainEvent("batch_end", epoch, cfg.epochs, step, total, float(win_loss) / win_seen,
                                int(win_correct) / win_seen, lr=opt.param_groups[0]["lr"],
                                samples_per_s=win_seen / max(now - win_t0, 1e-9), elapsed_s=now - t_start,
                                device=dev_name))
                win_loss.zero_()
                win_correct.zero_()
                win_seen, win_t0 = 0, now
        train_seconds = time.perf_counter() - t_epoch
        val_acc = accuracy(model, val_split, device)
        row = {"epoch": epoch, "loss": float(ep_loss) / max(ep_seen, 1), "accuracy": int(ep_correct) / max(ep_seen, 1),
               "val_accuracy": val_acc, "samples_per_s": ep_seen / max(train_seconds, 1e-9),
               "lr": opt.param_groups[0]["lr"]}
        result.history.append(row)
        emit(TrainEvent("epoch_end", epoch, cfg.epochs, step, total, row["loss"], row["accuracy"], val_acc,
                        row["lr"], row["samples_per_s"], time.perf_counter() - t_start, dev_name))
        if not track:
            continue
        if val_acc > best_acc:   # strictly better: a tie keeps the earlier (less trained) weights
            best_acc, result.best_epoch, since_best = val_acc, epoch, 0
            if cfg.restore_best:
                best_state = _snapshot(model)
        else:
            since_best += 1
        if cfg.early_stop is not None and since_best >= cfg.early_stop and epoch < cfg.epochs:
            result.stopped_early = True
            emit(TrainEvent("early_stop", epoch, cfg.epochs, step, total, val_accuracy=best_acc,
                            elapsed_s=time.perf_counter() - t_start, device=dev_name, best_epoch=result.best_epoch))
            break
    last_epoch = len(result.history)
    if not track:
        result.best_epoch = 1 + max(range(last_epoch), key=lambda i: result.history[i]["val_accuracy"])
    if cfg.restore_best and result.best_epoch != last_epoch:
        _restore_(model, best_state)
        result.restored = True
    result.val_accuracy = best_acc if cfg.restore_best else result.history[-1]["val_accuracy"]
    result.seconds = time.perf_counter() - t_start
    emit(TrainEvent("end", last_epoch, cfg.epochs, step, total, val_accuracy=result.val_accuracy,
                    elapsed_s=result.seconds, device=dev_name, best_epoch=result.best_epoch if track else None))
    model.eval()
    return result


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer, on their device. A masked layer's state is its
    `weight_orig` and `weight_mask` (torch.nn.utils.prune), so masks come back with the weights."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def _restore_(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    model.load_state_dict(state)
    # a masked layer's `weight` is an attribute its forward pre-hook recomputes as weight_orig *
    # weight_mask on the next forward pass; recompute it now so it is right before that, too
    for m in model.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                hook(m, None)
