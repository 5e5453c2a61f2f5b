"""Recipe replay: run every step of a variant's recipe again, from its root, each with the seed it
recorded, so the result can be checked against the original (same params and non-zeros, accuracy
within run-to-run noise).

A recipe is the list of step dicts a variant carries (DESIGN.md: "the ordered list of step configs
that produced it from its root"). Its first step made the root:

- `train`: trained again, or, with `reuse_root=True` (the default), taken from the workspace when a
  root variant there was made by exactly this step (the shipped baselines are: replaying a recipe
  that starts at `base-lenet5` starts from `base-lenet5`, not from a 12-epoch retraining);
- `upload`: an uploaded checkpoint cannot be made again; the variant that upload created (same
  file hash) is used, or the replay is refused;
- `distill` (a fresh student): distilled again from the teacher it names, which must be in the
  workspace;
- `transfer`: transferred again from its source (the source variant when it is here and
  `reuse_root`, else the source's own recipe replayed first; or the registry model).

Every later step (`prune`, `prune_recover`, `quantize`, `finetune`, `distill` into the current
variant) is mapped back to its task config and run through the task registry, so a replayed step
is exactly what the pages and the CLI run. A step that cannot be mapped is refused before anything
runs, with a message naming the step.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.base.cancel import Cancelled
from core.base.limits import MAX_RECIPE_BYTES
from core.compress.quant.quantize import QuantConfig
from core.measure.training import TrainConfig
from core.store.workspace import VariantNotFound
from core.tasks.distill import DistillJobConfig
from core.tasks.finetune import FinetuneJobConfig
from core.tasks.prune import PruneJobConfig
from core.tasks.prune_recover import PruneRecoverJobConfig
from core.tasks.quantize import QuantizeJobConfig
from core.tasks.registry import TaskContext, run_task
from core.tasks.share_weights import EntropyCodeJobConfig, ShareWeightsJobConfig
from core.tasks.train import TrainJobConfig
from core.tasks.transfer import TransferJobConfig

ROOT_STEPS = ("train", "upload", "distill", "transfer")
CHILD_STEPS = ("prune", "prune_recover", "quantize", "finetune", "distill", "share_weights", "entropy_code")
KNOWN_STEPS = tuple(dict.fromkeys(ROOT_STEPS + CHILD_STEPS))
MAX_STEPS = 50                     # a recipe longer than this is not one the app makes
NOT_RECIPE = ("device", "log_every")   # where a step ran and how often it logged: not part of what it did


class RecipeError(ValueError):
    """A recipe that cannot be replayed; the message names the step."""


@dataclass
class ReplayStep:
    """One step of the replay as planned and, once run, what it produced."""

    index: int                  # 1-based position in the recipe
    step: dict
    kind: str                   # the registered task kind that runs it ("" for a reused root)
    variant_id: str | None = None
    reused: bool = False
    note: str = ""

    @property
    def label(self) -> str:
        return f"step {self.index} ({self.step.get('step')})"


@dataclass
class ReplayResult:
    variant: Any                               # the final core.store.workspace.Variant
    steps: list[ReplayStep] = field(default_factory=list)
    originals: list[Any] = field(default_factory=list)   # variants here with the same recipe (made before)

    def to_dict(self) -> dict:
        v = self.variant
        out = {"variant_id": v.id, "name": v.name, "accuracy": v.metrics.get("accuracy"),
               "params": v.metrics.get("params"), "nonzero_params": v.metrics.get("nonzero_params"),
               "steps": [{"index": s.index, "step": s.step.get("step"), "kind": s.kind, "variant_id": s.variant_id,
                          "reused": s.reused, "note": s.note} for s in self.steps],
               "originals": [{"id": o.id, "name": o.name, "accuracy": o.metrics.get("accuracy"),
                              "params": o.metrics.get("params"), "nonzero_params": o.metrics.get("nonzero_params")}
                             for o in self.originals]}
        if self.originals and v.metrics.get("accuracy") is not None and self.originals[0].metrics.get("accuracy") is not None:
            out["accuracy_delta_points"] = round((v.metrics["accuracy"] - self.originals[0].metrics["accuracy"]) * 100, 4)
        return out


# ---------------------------------------------------------------- checking a recipe

def parse_recipe(data: Any) -> list[dict]:
    """`data` (a list of step dicts, JSON text or bytes of one, or a dict holding a `recipe` list:
    a variant record or a model card) as a checked recipe. RecipeError says what is wrong."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RecipeError("the recipe file is not UTF-8 text (expected JSON)") from None
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise RecipeError(f"the recipe is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    if isinstance(data, dict) and isinstance(data.get("recipe"), list):
        data = data["recipe"]
    check_recipe(data)
    return data


def read_recipe_file(data: bytes) -> list[dict]:
    """An uploaded recipe file, checked: its size (at most MAX_RECIPE_BYTES), then as `parse_recipe`.
    RecipeError (one line) says what is wrong."""
    if not data:
        raise RecipeError("the file is empty")
    if len(data) > MAX_RECIPE_BYTES:
        raise RecipeError(f"the file is {len(data):,} bytes; a recipe is at most {MAX_RECIPE_BYTES:,} bytes")
    return parse_recipe(data)


def check_recipe(recipe: Any) -> None:
    """Refuse, before anything runs, a recipe that is not a list of known step dicts in an order
    that can be replayed, or whose steps do not map to their task configs."""
    if not isinstance(recipe, list):
        raise RecipeError(f"a recipe is a JSON list of step objects, got {type(recipe).__name__}")
    if not recipe:
        raise RecipeError("the recipe is empty: it needs at least the step that made its root")
    if len(recipe) > MAX_STEPS:
        raise RecipeError(f"the recipe has {len(recipe)} steps; at most {MAX_STEPS} are replayed")
    for i, step in enumerate(recipe, 1):
        if not isinstance(step, dict):
            raise RecipeError(f"step {i} is not an object with a \"step\" name, got {type(step).__name__}")
        name = step.get("step")
        if not isinstance(name, str) or not name:
            raise RecipeError(f"step {i} has no \"step\" name (one of {', '.join(KNOWN_STEPS)})")
        if name not in KNOWN_STEPS:
            raise RecipeError(f"step {i} ({name}) cannot be replayed: unknown step; replay knows "
                              f"{', '.join(KNOWN_STEPS)}")
        allowed = ROOT_STEPS if i == 1 else CHILD_STEPS
        if name not in allowed:
            where = "first" if i == 1 else "later"
            raise RecipeError(f"step {i} ({name}) cannot be replayed as a {where} step: a recipe starts with "
                              f"{', '.join(ROOT_STEPS)} and continues with {', '.join(CHILD_STEPS)}")
        try:
            if i == 1:
                _root_config(step, None)
                if name == "transfer":
                    _transfer_config(step, "placeholder", None)
            else:
                _child_config(step, "placeholder", None)
        except RecipeError:
            raise
        except (ValueError, TypeError, KeyError) as e:
            raise RecipeError(f"step {i} ({name}) cannot be replayed: {_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(text.split()) or type(e).__name__


def _settings(step: dict) -> dict:
    return {k: v for k, v in step.items() if k != "step"}


def _train_settings(d: dict) -> dict:
    names = set(TrainConfig.__dataclass_fields__)
    return {k: v for k, v in d.items() if k in names and k not in NOT_RECIPE}


def _root_config(step: dict, name: str | None):
    """(task kind, config) of a root step; `upload` has no task (None, None)."""
    s = _settings(step)
    kind = step["step"]
    if kind == "train":
        cfg = TrainJobConfig.from_dict(s)
        return "train", (cfg if name is None else TrainJobConfig.from_dict({**cfg.to_dict(), "name": name}))
    if kind == "upload":
        if not isinstance(s.get("sha256"), str):
            raise RecipeError("step 1 (upload) cannot be replayed: it names no file hash (sha256)")
        return None, None
    if kind == "distill":
        if not isinstance(s.get("teacher"), str) or not isinstance(s.get("student"), str):
            raise RecipeError("step 1 (distill) cannot be replayed: it names no teacher and student")
        return "distill", DistillJobConfig(teacher=s["teacher"], student=s.get("model") or s["student"],
                                           distill=s.get("distill") or {}, subset=s.get("subset"),
                                           ablation=bool(s.get("ablation", False)), name=name)
    if kind == "transfer":
        source = s.get("source")
        if not isinstance(source, dict) or not isinstance(source.get("name") or source.get("variant"), str):
            raise RecipeError("step 1 (transfer) cannot be replayed: it names no source")
        if not isinstance(s.get("dataset"), str):
            raise RecipeError("step 1 (transfer) cannot be replayed: it names no dataset")
        return "transfer", None   # built in `_transfer_config` once its source is known
    raise RecipeError(f"step 1 ({kind}) cannot start a replay")


def _transfer_config(step: dict, source: str, name: str | None):
    s = _settings(step)
    return TransferJobConfig(source=source, dataset=s["dataset"], freeze_backbone=bool(s.get("freeze_backbone", True)),
                             pretrained=bool((s.get("source") or {}).get("pretrained", True)),
                             train=_train_settings(s), subset=s.get("subset"), name=name)


def _child_config(step: dict, current: str, name: str | None):
    """(task kind, config) that makes `step` from the variant `current`."""
    s = _settings(step)
    kind = step["step"]
    if kind == "prune":
        return "prune", PruneJobConfig(variant=current, prune=s, name=name)
    if kind == "prune_recover":
        return "prune_recover", PruneRecoverJobConfig.from_dict({**s, "variant": current, "name": name})
    if kind == "quantize":
        train, subset = s.pop("train", None), s.pop("subset", None)
        extra = {"train": train} if isinstance(train, dict) else {}
        return "quantize", QuantizeJobConfig(variant=current, quant=QuantConfig.from_dict(s), subset=subset,
                                             name=name, **extra)
    if kind == "finetune":
        return "finetune", FinetuneJobConfig(variant=current, train=_train_settings(s), subset=s.get("subset"),
                                             name=name)
    if kind == "distill":
        if not isinstance(s.get("teacher"), str):
            raise RecipeError("a distill step names no teacher")
        return "distill", DistillJobConfig(teacher=s["teacher"], student=current, distill=s.get("distill") or {},
                                           subset=s.get("subset"), ablation=bool(s.get("ablation", False)),
                                           name=name)
    if kind in ("share_weights", "entropy_code"):
        if kind == "entropy_code":     # deterministic: the parent's codes re-encoded
            return kind, EntropyCodeJobConfig(variant=current, name=name)
        return kind, ShareWeightsJobConfig.from_dict({k: v for k, v in s.items() if k not in NOT_RECIPE}
                                                     | {"variant": current, "name": name})
    raise RecipeError(f"{kind} is not a step that follows the root")


# ---------------------------------------------------------------- finding what is already here

def normalized_step(step: dict) -> str:
    """A step as canonical JSON without what does not change its result (its name, where it ran):
    two steps with equal normal forms made (or would make) the same variant."""
    s = _settings(step)
    s.pop("name", None)
    for k in NOT_RECIPE:
        s.pop(k, None)
    if step.get("step") == "train":
        try:
            s = TrainJobConfig.from_dict(s).to_dict()   # defaults filled in: older recipes lack newer keys
            s.pop("name", None)
        except (ValueError, TypeError):
            pass
    for nested in ("train", "finetune"):
        if isinstance(s.get(nested), dict):
            s[nested] = {k: v for k, v in s[nested].items() if k not in NOT_RECIPE}
    return json.dumps({"step": step.get("step"), **s}, sort_keys=True, default=str)


def normalized_recipe(recipe: list[dict]) -> list[str]:
    return [normalized_step(s) if isinstance(s, dict) else json.dumps(s) for s in recipe]


def find_root(ws, step: dict):
    """The oldest root variant here made by exactly `step` (its recipe is that one step), or None."""
    want = normalized_step(step)
    for v in ws.list_variants():
        if v.parent_id is None and len(v.recipe) == 1 and isinstance(v.recipe[0], dict) \
                and normalized_step(v.recipe[0]) == want:
            return v
    return None


def find_originals(ws, recipe: list[dict]) -> list:
    """Variants here whose whole recipe equals `recipe` (what a replay is compared with), oldest first."""
    want = normalized_recipe(recipe)
    return [v for v in ws.list_variants() if len(v.recipe) == len(recipe) and normalized_recipe(v.recipe) == want]


def _variant_exists(ws, ref: str) -> bool:
    try:
        ws.get_variant(ref)
        return True
    except VariantNotFound:
        return False


def preflight(ws, recipe: list[dict], *, reuse_root: bool = True) -> list[str]:
    """What the replay will do, one line per step, refusing now what would fail later (a teacher
    or an uploaded checkpoint that is not in this workspace)."""
    check_recipe(recipe)
    lines = []
    for i, step in enumerate(recipe, 1):
        kind = step["step"]
        label = f"step {i} ({kind})"
        if kind == "distill" and not _variant_exists(ws, step["teacher"]):
            raise RecipeError(f"{label} cannot be replayed: its teacher {step['teacher']!r} is not in this workspace "
                              "(replay the teacher's recipe first, or use the workspace it was made in)")
        if i == 1:
            found = find_root(ws, step)
            if kind == "upload":
                if found is None:
                    raise RecipeError(f"{label} cannot be replayed: the uploaded checkpoint "
                                      f"{step.get('filename') or ''} (sha256 {str(step.get('sha256'))[:12]}…) is not "
                                      "in this workspace, and an upload cannot be made again; upload it first")
                lines.append(f"{label}: the uploaded checkpoint {found.name} ({found.id})")
            elif reuse_root and found is not None:
                lines.append(f"{label}: reuse {found.name} ({found.id}), made by exactly this step")
            elif kind == "transfer":
                src = step["source"]
                if src.get("variant") and not (reuse_root and _variant_exists(ws, src["variant"])):
                    inner = step.get("source_recipe")
                    if not isinstance(inner, list) or not inner:
                        raise RecipeError(f"{label} cannot be replayed: its source {src.get('name') or src['variant']} "
                                          "is not in this workspace and the step does not carry the source's recipe")
                    preflight(ws, inner, reuse_root=reuse_root)   # the source's own recipe is replayed first
                lines.append(f"{label}: transfer again from {_transfer_source_text(ws, step, reuse_root)}")
            else:
                lines.append(f"{label}: run again" + (" (no variant here was made by this step)" if reuse_root else ""))
        else:
            lines.append(f"{label}: run again")
    return lines


def _transfer_source_text(ws, step: dict, reuse_root: bool) -> str:
    src = step.get("source") or {}
    if src.get("variant"):
        if reuse_root and _variant_exists(ws, src["variant"]):
            return f"the variant {src.get('name') or src['variant']} ({src['variant']})"
        return f"{src.get('name') or src['variant']}, whose own recipe is replayed first"
    return f"the registered model {src.get('name')}"


# ---------------------------------------------------------------- running it

def _sub_context(ctx: TaskContext, lo: float, hi: float, prefix: str) -> TaskContext:
    """`ctx` with progress mapped into [lo, hi] and messages prefixed by the step."""
    def on_progress(p: float, msg: str) -> None:
        ctx.on_progress(lo + (hi - lo) * min(max(p, 0.0), 1.0), f"{prefix}: {msg}")

    def log(text: str) -> None:
        ctx.log(f"[{prefix}] {text}")
    return TaskContext(ctx.workspace, on_event=lambda e: ctx.on_event({"replay_step": prefix, **e}),
                       should_stop=ctx.should_stop, log=log, on_progress=on_progress, job_id=ctx.job_id,
                       save_variant=ctx.save_variant)


def replay_in(ctx: TaskContext, recipe: list[dict], *, reuse_root: bool = True, name: str | None = None,
              span: tuple[float, float] = (0.0, 1.0)) -> ReplayResult:
    """Replay `recipe` with `ctx` (the workspace, progress, cancellation, where variants are
    saved). The last step's variant is named `name` when given."""
    ws = ctx.workspace
    for line in preflight(ws, recipe, reuse_root=reuse_root):
        ctx.log(line)
    originals = find_originals(ws, recipe)
    n = len(recipe)
    lo, hi = span
    steps: list[ReplayStep] = []
    current = None
    for i, step in enumerate(recipe, 1):
        if ctx.should_stop():
            raise Cancelled(f"cancelled before step {i} of {n}")
        kind = step["step"]
        s_lo, s_hi = lo + (hi - lo) * (i - 1) / n, lo + (hi - lo) * i / n
        prefix = f"step {i}/{n} ({kind})"
        last = i == n
        rs = ReplayStep(i, step, kind)
        sub = _sub_context(ctx, s_lo, s_hi, prefix)
        if i == 1:
            found = find_root(ws, step)
            if found is not None and (reuse_root or kind == "upload"):
                rs.kind, rs.reused, rs.variant_id = "", True, found.id
                rs.note = f"reused {found.name} ({found.id}), made by exactly this step"
                ctx.on_progress(s_hi, f"{prefix}: reused {found.name}")
            elif kind == "transfer":
                source = _transfer_source(ctx, step, reuse_root, (s_lo, s_lo + (s_hi - s_lo) / 2))
                cfg = _transfer_config(step, source, name if last else None)
                rs.kind = "transfer"
                rs.variant_id = run_task("transfer", cfg, sub).variant_id
            else:
                task, cfg = _root_config(step, name if last else None)
                rs.kind = task
                rs.variant_id = run_task(task, cfg, sub).variant_id
        else:
            task, cfg = _child_config(step, current.id, name if last else None)
            rs.kind = task
            rs.variant_id = run_task(task, cfg, sub).variant_id
        current = ws.get_variant(rs.variant_id)
        rs.note = rs.note or f"made {current.name} ({current.id}): test accuracy {current.metrics.get('accuracy', 0):.4f}"
        ctx.log(f"{prefix}: {rs.note}")
        steps.append(rs)
    ctx.on_progress(hi, f"replayed {n} step{'s' if n != 1 else ''}: {current.name} ({current.id})")
    return ReplayResult(current, steps, [o for o in originals if o.id != current.id])


def _transfer_source(ctx: TaskContext, step: dict, reuse_root: bool, span: tuple[float, float]) -> str:
    """The `source` of a transfer step's config: the source variant (here, or made again from its
    own recipe) or the registered model's name."""
    src = step["source"]
    vid = src.get("variant")
    if not vid:
        return src["name"]
    if reuse_root and _variant_exists(ctx.workspace, vid):
        return ctx.workspace.get_variant(vid).id
    source_recipe = step.get("source_recipe")
    if not isinstance(source_recipe, list) or not source_recipe:
        raise RecipeError(f"step 1 (transfer) cannot be replayed: its source {src.get('name') or vid} is not in this "
                          "workspace and the step does not carry the source's recipe")
    ctx.log(f"replaying the recipe of the transfer source {src.get('name') or vid} first")
    return replay_in(ctx, source_recipe, reuse_root=reuse_root, span=span).variant.id


def replay(ws, recipe: list[dict], *, on_progress: Callable[[float, str], None] | None = None,
           should_stop: Callable[[], bool] | None = None, reuse_root: bool = True, name: str | None = None,
           log: Callable[[str], None] | None = None):
    """Run every step of `recipe` again in workspace `ws`, from its root, each with its recorded
    seed; returns the final Variant (a new one; the originals are left as they are)."""
    return replay_detailed(ws, recipe, on_progress=on_progress, should_stop=should_stop, reuse_root=reuse_root,
                           name=name, log=log).variant


def replay_detailed(ws, recipe: list[dict], *, on_progress=None, should_stop=None, reuse_root: bool = True,
                    name: str | None = None, log=None) -> ReplayResult:
    """As `replay`, returning every step's variant and the original(s) to compare with."""
    ctx = TaskContext(ws, should_stop=should_stop or (lambda: False), log=log or (lambda s: None),
                      on_progress=on_progress or (lambda p, m: None))
    return replay_in(ctx, recipe, reuse_root=reuse_root, name=name)
