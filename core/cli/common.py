"""What every command of the CLI shares: one-line errors, bounded argparse types (every numeric
option has a range: `--lr 1e308` is a one-line error, not a traceback an hour later), tables and
metrics printed for people, and a task run inline behind a progress bar."""
from __future__ import annotations

import argparse
import math
import sys

from tqdm import tqdm

from core.base.config import check_fraction
from core.base.units import human_bytes
from core.measure.metrics import METRIC_NAMES
from core.tasks import TaskContext, job_title, run_task

EXIT_USAGE = 2


class CliError(Exception):
    """A user mistake: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line instead of usage + traceback
        raise CliError(f"{message} (see: {self.prog} --help)")


def whole(lo: int, hi: int):
    """argparse type: a whole number in [lo, hi] (every numeric option is bounded: `--lr 1e308`
    or `--epochs 99999999` is a one-line error, not a traceback an hour later)."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number from {lo:,} to {hi:,}, got {s!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected a whole number from {lo:,} to {hi:,}, got {s!r}")
        return v
    return parse


def number(lo: float, hi: float):
    """argparse type: a finite number in (lo, hi]."""
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number above {lo:g} and at most {hi:g}, got {s!r}") from None
        if not (math.isfinite(v) and lo < v <= hi):
            raise argparse.ArgumentTypeError(f"expected a number above {lo:g} and at most {hi:g}, got {s!r}")
        return v
    return parse


EPOCHS, BATCH, SUBSET, STEPS = whole(1, 1000), whole(1, 65_536), whole(1, 100_000_000), whole(1, 100)
SEED = whole(0, 2**31 - 1)
LR = number(0.0, 10.0)
QUANT_MODES = ("static-int8", "dynamic-int8", "fp16", "bf16", "weight-only", "qat")   # core.compress.quant.quantize.MODES


def fraction(s: str) -> float:
    """argparse type for an amount in [0, 1), checked by the engine's one fraction validator."""
    try:
        return check_fraction("the value", s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {s!r}") from None


def unit_interval(s: str) -> float:
    """argparse type for a weight in [0, 1]."""
    try:
        return check_fraction("the value", s, upper_inclusive=True)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {s!r}") from None


def print_table(rows: list[dict], columns: list[str]) -> None:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=False)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)))


def print_metrics(m: dict, *, latency: bool = True) -> None:
    """The fixed metrics, one a line (`latency` False: without the latency figures and their device,
    for a command that prints them with `print_latency`)."""
    for k in METRIC_NAMES:
        if not latency and (k.startswith("latency") or k == "device"):
            continue
        v = m.get(k)
        if k == "accuracy" and v is not None:
            s = f"{v:.4f}"
        elif k.endswith("bytes") and v is not None:
            s = f"{v} ({human_bytes(v)})"
        elif k.startswith("latency") and isinstance(v, (int, float)):
            s = f"{v:.3f} ms" if math.isfinite(v) else "not measurable now"
        else:
            s = str(v)
        print(f"  {k:<17} {s}")


def print_latency(card: dict) -> None:
    """The latency figures of `core.io.model_card.latency_card`, one runtime after the other."""
    for entry in card["runtimes"].values():
        what = ", ".join(w for w in (entry.get("model"), entry.get("device") and f"on {entry['device']}") if w)
        print(f"  latency in {entry['runtime']}" + (f" ({what})" if what else "") + ":")
        if entry.get("unavailable"):
            print(f"    no {entry['runtime']} figure: {entry['unavailable']}")
            continue
        for batch, fig in entry["batches"].items():
            print(f"    batch {batch:<3} {fig['text']}")
    if card.get("verdict"):
        print(f"  verdict: {card['verdict']}")


def progress_bar(desc: str):
    """A tqdm bar on stderr fed by task progress callbacks; returns (on_progress, close)."""
    bar = tqdm(total=1000, desc=desc, file=sys.stderr, disable=None, bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")

    def on_progress(p: float, msg: str) -> None:
        bar.n = int(min(max(p, 0.0), 1.0) * 1000)
        bar.set_postfix_str(msg[-60:], refresh=False)
        bar.refresh()
    return on_progress, bar.close


def run_with_progress(kind: str, config, ws, quiet: bool):
    """Run a registered task inline with a progress bar; returns its TaskOutcome."""
    on_progress, close = progress_bar(job_title(kind, config, ws))
    log = (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr))
    try:
        return run_task(kind, config, TaskContext(ws, on_progress=on_progress, log=log))
    finally:
        close()


def result_of(v, args) -> dict:
    """The printed (or --json) result of a command that made variant `v`."""
    if not args.json:
        print(f"variant {v.id}: {v.name} [{v.kind_label}]")
        print_metrics(v.metrics)
    return {"id": v.id, "name": v.name, "parent_id": v.parent_id, "kind": v.kind, **v.metrics}
