"""The `distill` command of the CLI: knowledge distillation of a teacher variant into a student
(a registered model or a variant), or with --ablation the same student and budget without it.

    python -m core distill --teacher VARIANT --student MODEL|VARIANT [--temperature T] [--alpha A]
                           [--epochs N] [--ablation]

`core.cli.main` imports it: `add_commands` and `COMMANDS`.
"""
from __future__ import annotations

from core.cli.common import BATCH, EPOCHS, LR, SEED, SUBSET, number, result_of, run_with_progress, unit_interval
from core.compress.distill.kd import DistillConfig
from core.models.registry import get_spec
from core.tasks import DistillJobConfig


def add_commands(sub) -> None:
    sp = sub.add_parser("distill", help="distill a teacher variant into a student model or variant (knowledge distillation)")
    sp.add_argument("--teacher", required=True, help="teacher variant id, id prefix or name")
    sp.add_argument("--student", required=True, help="a registered model name (e.g. lenet5-small) or a variant")
    sp.add_argument("--temperature", type=number(0.0, 100.0), default=4.0, help="softmax temperature T (0, 100]")
    sp.add_argument("--alpha", type=unit_interval, default=0.9, help="weight of the soft (teacher) loss, [0, 1]")
    sp.add_argument("--epochs", type=EPOCHS, default=3)
    sp.add_argument("--lr", type=LR, default=0.005)
    sp.add_argument("--batch-size", type=BATCH, default=64)
    sp.add_argument("--seed", type=SEED, default=0)
    sp.add_argument("--subset", type=SUBSET, help="train on only this many training samples")
    sp.add_argument("--ablation", action="store_true", help="the same student and budget without the teacher")
    sp.add_argument("--name")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


def cmd_distill(args, ws_factory) -> dict:
    """Distill a teacher variant into a student (a registered model or a variant); with
    --ablation, the same student and budget without the teacher (the scratch baseline)."""
    ws = ws_factory()
    teacher = ws.get_variant(args.teacher)
    try:
        get_spec(args.student)
        student = args.student
    except ValueError:
        student = ws.get_variant(args.student).id   # not a model: a variant, or VariantNotFound
    config = DistillJobConfig(teacher=teacher.id, student=student, name=args.name, device=args.device,
                              subset=args.subset, ablation=args.ablation,
                              distill=DistillConfig(temperature=args.temperature, alpha=args.alpha, epochs=args.epochs,
                                                    lr=args.lr, batch_size=args.batch_size, seed=args.seed))
    out = run_with_progress("distill", config, ws, args.json)
    v = ws.get_variant(out.variant_id)
    r = out.result or {}
    result = {**result_of(v, args), "teacher_id": r.get("teacher_id"), "teacher_accuracy": r.get("teacher_accuracy"),
              "agreement": r.get("agreement"), "ablation": args.ablation, "history": r.get("history", [])}
    if not args.json:
        print(f"  {'teacher':<17} {teacher.name} ({teacher.id}), test accuracy {teacher.metrics.get('accuracy', 0):.4f}")
        print(f"  {'agreement':<17} {r.get('agreement', 0):.4f} (top-1 match with the teacher, validation split)")
    return result


COMMANDS = {"distill": cmd_distill}
