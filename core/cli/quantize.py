"""The `quantize` command of the CLI: a float variant into a quantized child (static or dynamic
int8, fp16/bf16, weight-only k-bit, QAT), with its coverage and the speed verdict.

    python -m core quantize VARIANT [--mode static-int8] [--bits 8] [--keep-float LAYER ...]

`core.cli.main` imports it: `add_commands` and `COMMANDS`.
"""
from __future__ import annotations

from core.cli.common import BATCH, EPOCHS, LR, QUANT_MODES, SEED, result_of, run_with_progress, whole
from core.compress.quant.quantize import QuantConfig, speed_verdict
from core.measure.training import TrainConfig
from core.tasks import QuantizeJobConfig


def add_commands(sub) -> None:
    sp = sub.add_parser("quantize", help="quantize a float variant into a child variant (int8, fp16/bf16, k-bit, QAT)")
    sp.add_argument("variant", help="variant id, id prefix or name")
    sp.add_argument("--mode", choices=list(QUANT_MODES), default="static-int8")
    sp.add_argument("--bits", type=whole(2, 8), default=8, help="weight-only: bits per weight (2-8)")
    sp.add_argument("--affine", action="store_true", help="weight-only: affine grid (default symmetric)")
    sp.add_argument("--calib-batches", type=whole(1, 200), default=8, help="static/qat: calibration batches of 64")
    sp.add_argument("--keep-float", nargs="+", metavar="LAYER", help="layers to keep in float")
    sp.add_argument("--epochs", type=EPOCHS, default=1, help="qat: fake-quant fine-tuning epochs")
    sp.add_argument("--lr", type=LR, default=0.001, help="qat: learning rate")
    sp.add_argument("--batch-size", type=BATCH, default=64)
    sp.add_argument("--seed", type=SEED, default=0)
    sp.add_argument("--name")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


def cmd_quantize(args, ws_factory) -> dict:
    """Quantize a float variant into a child variant; prints the coverage, a warning for layers
    left float, and the speed verdict beside the measured latency."""
    ws = ws_factory()
    parent = ws.get_variant(args.variant)
    quant = QuantConfig(mode=args.mode, bits=args.bits, symmetric=not args.affine, calib_batches=args.calib_batches,
                        keep_float=tuple(args.keep_float or ()))
    config = QuantizeJobConfig(variant=parent.id, quant=quant, name=args.name, device=args.device,
                               train=TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                                 weight_decay=0.0, seed=args.seed, device=args.device))
    out = run_with_progress("quantize", config, ws, args.json)
    v = ws.get_variant(out.variant_id)
    report = (out.result or {}).get("report", {})
    verdict = speed_verdict(v.metrics)
    result = {**result_of(v, args), "coverage": report.get("coverage_after", []), "warning": report.get("warning"),
              "speed_verdict": verdict}
    if not args.json:
        m = v.metrics
        ref = m.get("reference_latency_ms_b64")
        if ref:
            print(f"  {'vs float parent':<17} batch 64 {ref:.3f} -> {m['latency_ms_b64']:.3f} ms "
                  f"({ref / m['latency_ms_b64']:.2f}x) on {m.get('device')}" + (f": {verdict}" if verdict else ""))
        rows = report.get("coverage_after", [])
        print(f"  coverage: {sum(1 for r in rows if r['action'] == 'quantized')} of {len(rows)} layers quantized")
        for r in rows:
            print(f"    {r['name']:<24} {r['type']:<12} {r['action']:<12} {r['detail']}")
        if report.get("warning"):
            print(f"  warning: {report['warning']}")
    return result


COMMANDS = {"quantize": cmd_quantize}
