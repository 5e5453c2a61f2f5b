"""Distill a teacher variant into a student: a registered model built fresh (a new root variant
whose recipe names the teacher) or a variant (a child of that student; a pruned student keeps its
zeros, a shrunk one its shapes). `ablation=True` trains the same student with the same budget,
seed and batch order WITHOUT the teacher, so the two results can be compared.

The student is timed with its teacher in the measurement lane, alternately, in one call: a new root
student as the `reference` of its measurement (both runtimes), a child student together with its parent
and its teacher (PyTorch eager). Stored as `teacher_<p>latency_ms_b<b>` (NaN when the pair did not settle)
and `<p>latency_ms_b<b>_vs_teacher_ci`, so the page's ratio to the teacher never depends on two separate
runs agreeing on a device string."""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field, replace

from core.base.config import DictConfig
from core.base.ratios import RUNTIMES, Ratio, latency_ratio, speed_words, timings_differ
from core.compress.distill.kd import DistillConfig, distill_, per_class_accuracy
from core.compress.pruning.masks import attach_masks_from_zeros_, remove_masks_
from core.measure.lane import default_budget_s, device_label
from core.measure.latency import time_models
from core.measure.metrics import resolve_device
from core.measure.speed import BATCHES, report_keys
from core.models.registry import create_model
from core.store.jobstore import Job
from core.store.variants import base_arch, measure_variant
from core.tasks.common import Parent, child_draft, dataset_of, is_model_name, open_parent, seed_everything, unique_name
from core.tasks.registry import TaskContext, TaskOutcome, register_task

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistillJobConfig(DictConfig):
    """Distill a teacher variant into a student (a registered model name or a variant)."""

    teacher: str
    student: str
    distill: DistillConfig = field(default_factory=DistillConfig)
    name: str | None = None
    device: str = "auto"
    subset: int | None = None     # train on this many training samples (None: all)
    ablation: bool = False        # the same student, budget and seed, without the teacher (alpha 0)

    def __post_init__(self):
        for role in ("teacher", "student"):
            v = getattr(self, role)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"{role} is required: " + ("the id or name of a trained variant" if role == "teacher"
                                                            else "a registered model name or a variant"))
        object.__setattr__(self, "distill", DistillConfig.coerce(self.distill))
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.subset is not None and (type(self.subset) is not int or self.subset < 1):
            raise ValueError(f"subset must be a positive number of samples, got {self.subset!r}")
        if not isinstance(self.ablation, bool):
            raise ValueError(f"ablation must be true or false, got {self.ablation!r}")

    @property
    def effective(self) -> DistillConfig:
        """The settings actually trained with: the ablation forces alpha to 0 (no teacher signal)."""
        return replace(self.distill, alpha=0.0) if self.ablation else self.distill

    def step(self, teacher_id: str) -> dict:
        return {"step": "distill", "teacher": teacher_id, "student": self.student, "ablation": self.ablation,
                "subset": self.subset, "distill": self.effective.to_dict()}

    def describe(self, name_of) -> str:
        student = self.student if is_model_name(self.student) else name_of(self.student)
        what = "Train without teacher (ablation)" if self.ablation else f"Distill {name_of(self.teacher)} into"
        return f"{what} {student}: {self.effective.label()}" + (f" → {self.name}" if self.name else "")

    def budget(self, *, teacher: str, images: str, student_variant: str | None) -> str:
        """The training budget and loss in one paragraph: `teacher` its name, `images` the dataset's
        title, `student_variant` the name of the student variant (None: a fresh registry model)."""
        d, n = self.distill, self.subset
        steps = f"{math.ceil(n / d.batch_size) * d.epochs:,} optimizer steps" if n else "every training image"
        temp = "" if d.alpha == 0 else f"; the teacher's scores are softened with T = {d.temperature:g}"
        what = ("plain cross-entropy: alpha 0 means the teacher is ignored (this is the ablation)" if d.alpha == 0 else
                f"{d.alpha:.0%} soft loss (imitate {teacher}), {1 - d.alpha:.0%} hard loss (true labels){temp}")
        data = f"{n:,} {images} training images" if n else f"the whole {images} training split"
        who = (f"**{student_variant}** continues from its trained weights; the result, measured on the full test "
               "split, is stored as its child." if student_variant is not None else
               f"A fresh, untrained **{self.student}** learns; the result, measured on the full test split, is stored "
               "as a new variant.")
        return f"{data} × {d.epochs} epoch(s), batch {d.batch_size} ({steps}); loss: {what}. {who}"


# ---------------------------------------------------------------- a distillation and its ablation

def experiment_key(config: dict) -> str:
    """What a distillation and its ablation share: the job config apart from `ablation` and `name`."""
    return json.dumps({k: v for k, v in config.items() if k not in ("ablation", "name")}, sort_keys=True)


def twin_config(config: dict, ablation: bool = True) -> DistillJobConfig:
    """The partner of a distill job's config: the same student, budget, data and seed, without the
    teacher (ablation=True) or with it (ablation=False). A chosen name gets a suffix, so the two
    results are told apart."""
    name = config.get("name")
    base = name.removesuffix(" (scratch)") if name else None
    return DistillJobConfig.from_dict({**config, "ablation": ablation,
                                       "name": (f"{base} (scratch)" if ablation else base) if base else None})


BAD_END = ("failed", "cancelled", "interrupted")


@dataclass
class Experiment:
    """A distillation and its ablation: the same settings with and without the teacher."""

    key: str
    distill: Job | None       # the run with the teacher
    ablation: Job | None      # the same without it
    jobs: list[Job]           # every job of the pair, newest first

    @property
    def newest(self) -> Job:
        return self.jobs[0]


def _stands_for(jobs: list[Job]) -> Job | None:
    """The job that stands for its side of a pair: the newest one that did not fail or stop."""
    good = [j for j in jobs if j.state not in BAD_END]
    return (good or jobs or [None])[0]


def experiments(all_jobs) -> list[Experiment]:
    """Distill jobs grouped into (distillation, ablation) pairs, newest first."""
    groups: dict[str, list[Job]] = {}
    for j in sorted((j for j in all_jobs if j.kind == "distill"), key=lambda j: -j.created_at):
        groups.setdefault(experiment_key(j.config), []).append(j)
    return [Experiment(key, _stands_for([j for j in js if not j.config.get("ablation")]),
                       _stands_for([j for j in js if j.config.get("ablation")]), js) for key, js in groups.items()]


@register_task("distill", DistillJobConfig, title="Distill")
def run_distill(ctx: TaskContext, cfg: DistillJobConfig) -> TaskOutcome:
    """Train a student against a teacher's softened outputs (Hinton KD) and store it, measured on
    the full test split. Events per epoch: {"stage": "distill", "kind", "epoch", "loss",
    "soft_loss", "hard_loss", "accuracy", "val_accuracy", "agreement"}."""
    ctx.on_progress(0.0, "loading data and models")
    t = open_parent(ctx, cfg.teacher, subset=cfg.subset)
    teacher_v, teacher, data = t.variant, t.model, t.data
    info = data.info
    seed_everything(cfg.distill.seed)
    student_parent: Parent | None = None
    if is_model_name(cfg.student):
        student = create_model(cfg.student, num_classes=info.num_classes, in_channels=info.in_channels,
                               image_size=info.image_size)
        student_label, masked = cfg.student, False
    else:
        student_parent = open_parent(ctx, cfg.student, subset=cfg.subset)
        sv = student_parent.variant
        if sv.dataset != teacher_v.dataset:
            raise ValueError(f"the student {sv.name} was trained on {sv.dataset} and the teacher {teacher_v.name} on "
                             f"{teacher_v.dataset}: distillation needs one dataset")
        student = copy.deepcopy(student_parent.model)
        student_label, masked = sv.name, bool(sv.kind.get("masked"))
    if masked:
        attach_masks_from_zeros_(student)    # pruned weights stay exactly zero while training
    dc = cfg.effective
    stage = "distill"
    ctx.log(("ablation (no teacher): " if cfg.ablation else "") + f"{student_label} <- {teacher_v.name} "
            f"({teacher_v.id}), {dc.label()}, lr {dc.lr:g}, batch {dc.batch_size}, {len(data.train)} train samples")

    def listen(e: dict) -> None:
        ctx.on_event({"stage": stage, **e})
        if e["kind"] in ("batch_end", "epoch_end"):
            p = e["step"] / max(e["total_steps"], 1)
            msg = f"{stage}: epoch {e['epoch']}/{e['epochs']}, step {e['step']}/{e['total_steps']}, loss {e['loss']:.4f}"
            if "agreement" in e:
                msg += f", val acc {e['val_accuracy']:.2%}, agreement {e['agreement']:.2%}"
            ctx.on_progress(0.02 + 0.88 * p, msg)
        if e["kind"] == "epoch_end":
            ctx.log(f"[{stage}] epoch {e['epoch']}/{e['epochs']} loss={e['loss']:.4f} soft={e.get('soft_loss', 0):.4f} "
                    f"hard={e['hard_loss']:.4f} val_acc={e['val_accuracy']:.4f} agreement={e['agreement']:.4f}")

    if not cfg.ablation:   # the teacher's logits for the whole training split come first (once, then reused)
        ctx.on_progress(0.01, f"running the teacher {teacher_v.name} once over {len(data.train):,} training images "
                              "(its outputs are reused every epoch)")
    result = distill_(student, teacher, data, dc, device=cfg.device, on_event=listen, should_stop=ctx.should_stop,
                      use_teacher=not cfg.ablation)
    if masked:
        remove_masks_(student)
    student = student.cpu()
    last = result.history[-1]
    ctx.on_progress(0.92, "measuring on the full test split")
    default = (f"{student_label} | scratch (ablation), {dc.epochs} ep" if cfg.ablation
               else f"{student_label} | distilled from {teacher_v.name}, T={dc.temperature:g} a={dc.alpha:g} {dc.epochs} ep")
    name = unique_name(ctx.workspace, cfg.name or default)
    extra = {"val_accuracy": last["val_accuracy"], "agreement": round(last["agreement"], 6),
             "teacher_id": teacher_v.id, "train_seconds": round(result.seconds, 2), **ctx.load_context()}
    notes = (f"{'Ablation: trained without the teacher' if cfg.ablation else 'Distilled'} "
             f"({teacher_v.name}, {teacher_v.id}, test accuracy {teacher_v.metrics.get('accuracy', float('nan')):.2%}); "
             f"val agreement with the teacher {last['agreement']:.2%}")
    step = cfg.step(teacher_v.id)
    if student_parent is not None:
        draft = child_draft(student_parent, student, name=name, step=step, device=cfg.device, notes=notes,
                            extra_metrics=extra)
        ctx.on_progress(0.96, "timing the student with its parent and its teacher, alternately")
        draft.metrics.update(timed_with_teacher(student, student_parent.model, teacher, info.input_shape, cfg.device))
    else:   # a new root: its recipe is this one step (which names the teacher); timed beside the teacher
        draft = measure_variant(student, data=data, name=name, arch=base_arch(cfg.student, data),
                                recipe=[{**step, "model": cfg.student, "dataset": data.info.name}], device=cfg.device,
                                notes=notes, extra_metrics=extra, reference=teacher.cpu())
        draft.metrics = as_teacher_keys(draft.metrics)
    v = ctx.save(draft)
    ctx.on_progress(1.0, f"saved {v.id}")
    ctx.log(f"saved variant {v.id}: test accuracy {v.metrics['accuracy']:.4f} (teacher "
            f"{teacher_v.metrics.get('accuracy', float('nan')):.4f}), val agreement {last['agreement']:.4f}")
    return TaskOutcome(variant_id=v.id, result={
        "teacher_id": teacher_v.id, "teacher_accuracy": teacher_v.metrics.get("accuracy"),
        "agreement": last["agreement"], "ablation": cfg.ablation, "history": result.history})


def as_teacher_keys(metrics: dict) -> dict:
    """The metrics of a student measured with its teacher as the `reference` (it is no parent):
    `reference_<p>latency_ms_b<b>` renamed `teacher_<p>latency_ms_b<b>` (NaN when the pair did not
    settle) and `<p>latency_ms_b<b>_vs_reference_ci` renamed `<p>latency_ms_b<b>_vs_teacher_ci`."""
    out = dict(metrics)
    for rt in RUNTIMES.values():
        for b in BATCHES:
            key = f"{rt.prefix}latency_ms_b{b}"
            if f"reference_{key}" not in out and f"{key}_vs_reference_ci" not in out:
                continue   # that runtime was not timed (ONNX Runtime unavailable)
            ref = out.pop(f"reference_{key}", None)
            out[f"teacher_{key}"] = float(ref) if ref is not None else float("nan")
            out[f"{key}_vs_teacher_ci"] = out.pop(f"{key}_vs_reference_ci", None)
        said = out.get(f"{rt.prefix}latency_unmeasured")
        if said:   # the reason of a withheld ratio names the teacher, not a parent
            out[f"{rt.prefix}latency_unmeasured"] = said.replace("the ratio to the parent", "the ratio to the teacher")
    return out


def timed_with_teacher(student, parent_model, teacher, input_shape, device: str = "auto") -> dict:
    """PyTorch eager keys of a student that is a child of another variant: the student, its parent
    and its teacher timed in ONE call of the lane, alternately, so both ratios are paired (the
    parent's as `reference_*`, the teacher's as `teacher_*`). Replaces the student's own figures
    with this call's, so every ratio divides figures of the same run."""
    dev = resolve_device(device)
    models = {"model": student, "reference": parent_model, "teacher": teacher}
    rep = time_models({k: copy.deepcopy(m).to(dev).eval() for k, m in models.items()}, input_shape, BATCHES, dev,
                      budget_s=1.5 * default_budget_s())   # three models: half as long again
    out = report_keys(rep, "", paired=True) | {"device": device_label(dev), "latency_other_cores": rep.other_cores}
    withheld = []
    for b in BATCHES:
        key = f"latency_ms_b{b}"
        r = rep.ratio_figure("teacher", "model", b)
        shown = r.shown and rep.settled("model", b)
        out[f"teacher_{key}"] = rep.ms("teacher", b) if shown else float("nan")
        out[f"{key}_vs_teacher_ci"] = [r.low, r.high] if shown else None
        if not shown and rep.settled("model", b):
            withheld.append(f"the ratio to the teacher at batch {b}")
    if withheld:   # report_keys wrote 'not measurable now: ... (batch 1, ...)' or ''
        said = out["latency_unmeasured"]
        head = said[:-1] + ", " if said else rep.unmeasurable_reason() + " ("
        out["latency_unmeasured"] = head + ", ".join(withheld) + ")"
    return out


# ---------------------------------------------------------------- the comparison the page shows

def speed_vs_teacher(student: dict, teacher: dict, batch: int = 64) -> dict[str, Ratio]:
    """runtime key -> how many times faster the student ran than its teacher at `batch`: timed
    together (`teacher_*` keys) where it was, else separate runs only on one device (the engine's rule)."""
    return {rt.key: latency_ratio(student, teacher, batch=batch, paired="teacher", runtime=rt.key)
            for rt in RUNTIMES.values()}


def speed_vs_teacher_words(student: dict, teacher: dict, batch: int = 64) -> str:
    """'PyTorch eager: 3.10x faster than the teacher (95% interval 2.95x-3.26x); ONNX Runtime: not
    measurable now: ...': each runtime's ratio with its interval, or why there is none."""
    parts = []
    for key, r in speed_vs_teacher(student, teacher, batch).items():
        title, prefix = RUNTIMES[key].title, RUNTIMES[key].prefix
        if f"{prefix}latency_ms_b{batch}" not in student and not student.get(f"{prefix}unavailable"):
            continue   # a runtime this server does not time in (WORKBENCH_LATENCY_RUNTIMES): nothing to say
        if not r.shown:
            unavailable = student.get(f"{RUNTIMES[key].prefix}unavailable") if RUNTIMES[key].prefix else ""
            why = (f"no {title} figure: {unavailable}" if unavailable else r.basis
                   if r.basis.startswith(("not measurable", "not compared", "no ")) else f"no ratio: {r.basis}")
            parts.append(f"{title}: {why}")
            continue
        words = speed_words(r.value)
        text = "same speed as the teacher" if words == "same speed" else f"{words} than the teacher"
        how = [r.interval_words() or "no interval"]
        if not r.basis.startswith("timed together"):
            how.append(r.basis)
        parts.append(f"{title}: {text} ({', '.join(how)})")
    return "; ".join(parts)



def class_accuracies(ws, variants) -> dict[str, list[float | None]]:
    """Per-class test accuracy of each variant (id -> list), on its own dataset's full test split."""
    out = {}
    for v in variants:
        data = dataset_of(v, workspace_root=getattr(ws, "root", None))
        out[v.id] = per_class_accuracy(ws.load_model(v), data.test, data.info.num_classes, "cpu")
    return out


def compare_distillation(teacher, distilled, scratch, *, per_class: dict[str, list] | None = None) -> dict:
    """Teacher vs distilled student vs the same student trained from scratch: accuracies, sizes,
    latencies (from the stored metrics; `latency_comparable` says whether the three absolute figures,
    from separate runs, compare, `latency_why` why not: core.base.ratios.timings_differ), each student's
    speed against the teacher (`speed_vs_teacher[role][batch][runtime]`: a Ratio, timed together where it
    was; `speed_words[role]` at batch 64 in words), the fraction of the teacher-student gap distillation closed,
    (distilled - scratch) / (teacher - scratch), and per-class deltas when `per_class` (from
    `class_accuracies`) is given. `verdict` is a plain sentence."""
    roles = {"teacher": teacher, "distilled": distilled, "scratch": scratch}
    keys = ("accuracy", "params", "nonzero_params", "size_bytes", "latency_ms_b1", "latency_ms_b64", "device")
    rows = {r: {"id": v.id, "name": v.name, **{k: v.metrics.get(k) for k in keys}} for r, v in roles.items()}
    t, d, s = (rows[r]["accuracy"] for r in ("teacher", "distilled", "scratch"))
    gap = t - s if None not in (t, s) else None
    closed = (d - s) / gap if gap is not None and d is not None and gap > 1e-9 else None
    if None in (t, d, s):
        verdict = "An accuracy is missing: measure the three variants first."
    elif gap <= 1e-9:
        verdict = (f"The student trained from scratch ({s:.2%}) already matches or beats the teacher ({t:.2%}): "
                   "there is no gap for distillation to close.")
    elif d <= s:
        verdict = (f"Distillation did not help: the distilled student ({d:.2%}) is no better than the same student "
                   f"trained from scratch ({s:.2%}) with the same budget.")
    else:
        verdict = (f"Distillation closed {closed:.0%} of the gap: {s:.2%} from scratch -> {d:.2%} distilled, "
                   f"teacher {t:.2%}.")
    why = timings_differ({r: v.metrics for r, v in roles.items()})   # three separate runs: the one rule
    # each student against the teacher: the pair timed together in the lane (`teacher_*` keys)
    speed = {r: {b: speed_vs_teacher(roles[r].metrics, teacher.metrics, b) for b in BATCHES}
             for r in ("distilled", "scratch")}
    out = {**rows, "gap_closed": closed, "verdict": verdict, "latency_comparable": not why, "latency_why": why,
           "speed_vs_teacher": speed,
           "speed_words": {r: speed_vs_teacher_words(roles[r].metrics, teacher.metrics) for r in speed}}
    if per_class is not None and all(v.id in per_class for v in roles.values()):
        pc = {r: per_class[v.id] for r, v in roles.items()}
        out["per_class"] = [
            {"class": i, **{r: pc[r][i] for r in pc},
             "distilled_minus_scratch": None if None in (pc["distilled"][i], pc["scratch"][i])
             else pc["distilled"][i] - pc["scratch"][i],
             "teacher_minus_distilled": None if None in (pc["teacher"][i], pc["distilled"][i])
             else pc["teacher"][i] - pc["distilled"][i]}
            for i in range(len(pc["teacher"]))]
    if closed is not None and not math.isfinite(closed):
        out["gap_closed"] = None
    return out
