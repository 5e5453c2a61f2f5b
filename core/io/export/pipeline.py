"""Download formats of a variant, each reload-verified in a fresh process before it is offered.

Formats (`FORMATS`; `formats_for` says which apply to a variant and why not):

- `safetensors`: the plain dense state_dict (no sparse or quantized encoding), loadable with
  `safetensors.torch.load_file` alone; the header metadata holds the arch and the model card,
  and the card is written beside it as JSON too. Rebuilding the module needs its class: this
  repository's `core.models.registry.build_from_arch(arch, state)` (shrunk layers included).
- `compact`: the variant's own stored file (sparse bitmask + values, int8 values with scales,
  bit-packed k-bit codes) with `load_compact.py`, a short loader that needs torch, safetensors,
  numpy and this repository's `core` package on the path.
- `onnx`: `torch.onnx.export` (TorchScript exporter, opset 17, dynamic batch axis), checked in
  onnxruntime against the PyTorch outputs; refused with the exporter's reason when a kind has no
  ONNX mapping (dynamic int8 Linear, for one).
- `recipe`: the ordered steps that made the variant, as JSON (`python -m core replay` reads it).
- `bundle`: a zip of every format that applies, the model card and a README.txt.

Every produced file is loaded again in a fresh `python` process (`python -m core.io.export.verify`)
that runs it on real test images; its logits are compared with the workspace variant's own
(max abs difference and top-1 agreement, within a tolerance that depends on the arithmetic: exact
for a re-encoding, looser for onnxruntime's own int8 or fp16 kernels). Results are cached per
(variant, format) under `<workspace>/exports/<variant id>/<format>/`, so a second visit is instant.

Modules: `export_formats` (what applies, names, the result record), `export_writers` (producing the
files), `export_verify` (the fresh process), and this one (the checks, the cache, the orchestration).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from core.data.datasets import cached_dataset, get_info
from core.data.types import DatasetUnavailable
from core.io.export.formats import (  # noqa: F401  (base_name, formats_for, FORMAT_INFO: part of this module's API)
    CARD_FILE,
    EXACT,
    EXPORT_VERSION,
    FORMAT_INFO,
    FORMATS,
    INT8,
    LOADER_FILE,
    N_IMAGES,
    ONNX_FLOAT,
    ONNX_HALF,
    ONNX_INT8,
    REPO_ROOT,
    RESULT_FILE,
    VERIFY_TIMEOUT_S,
    ExportResult,
    ExportUnavailable,
    base_name,
    file_name,
    formats_for,
    quant_mode,
    unavailable_reason,
)
from core.io.export.writers import WRITERS, _card_bytes, dense_state  # noqa: F401  (dense_state: part of the API)

# ---------------------------------------------------------------- the cache

def cache_dir(ws, variant_id: str, fmt: str) -> Path:
    return Path(ws.root) / "exports" / variant_id / fmt


def cached_result(ws, v, fmt: str) -> ExportResult | None:
    """The cached result of (variant, format) if it is for this very variant and still on disk."""
    path = cache_dir(ws, v.id, fmt) / RESULT_FILE
    try:
        r = ExportResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if r.version != EXPORT_VERSION or r.variant_created_at != v.created_at:
        return None
    if r.path and not Path(r.path).is_file():
        return None
    return r


def _store(ws, v, fmt: str, work: Path, result: ExportResult) -> ExportResult:
    """Move `work` (the produced files) into the cache as one rename; paths point there."""
    final = cache_dir(ws, v.id, fmt)
    final.parent.mkdir(parents=True, exist_ok=True)
    result.variant_created_at = v.created_at
    result.created_at = time.time()

    def moved(p: str | None) -> str | None:
        return str(final / Path(p).relative_to(work)) if p else None

    result.path = moved(result.path)
    result.extras = [moved(p) for p in result.extras]
    (work / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=1))
    old = final.with_name(f".{fmt}.{uuid.uuid4().hex[:8]}.old")
    with contextlib.suppress(FileNotFoundError):
        os.replace(final, old)
    try:
        os.replace(work, final)
    except OSError:   # another process stored it at the same moment: theirs is as good
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return cached_result(ws, v, fmt) or result


def drop_orphans(ws) -> list[str]:
    """Remove the cached exports of variants that were deleted (or re-created under the same id:
    their results are refused by `cached_result` anyway). Returns the ids removed."""
    root = Path(ws.root) / "exports"
    if not root.is_dir():
        return []
    known = {v.id for v in ws.list_variants()}
    gone = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in known]
    for name in gone:
        shutil.rmtree(root / name, ignore_errors=True)
    return gone


def clear_cache(ws, variant_id: str | None = None) -> None:
    shutil.rmtree(Path(ws.root) / "exports" / variant_id if variant_id else Path(ws.root) / "exports",
                  ignore_errors=True)


# ---------------------------------------------------------------- reference outputs and tolerances

def test_inputs(ws, v, n: int = N_IMAGES):
    """(x, labels): `n` real test images of the variant's dataset (a fixed seeded subset),
    normalised. When that dataset is not on this machine (a fallback would be another dataset),
    `n` seeded random inputs of its shape instead, and labels None."""
    import torch

    try:
        ds = cached_dataset(v.dataset, workspace_root=ws.root)
        if ds.info.name == v.dataset and len(ds.test):
            test = ds.test.subset(n, seed=7)
            return test.normalize(test.images), test.labels
    except (DatasetUnavailable, OSError, ValueError):
        pass
    g = torch.Generator().manual_seed(7)
    return torch.randn(n, *get_info(v.dataset, ws.root).input_shape, generator=g), None


def input_words(labels) -> str:
    return "test images" if labels is not None else "random inputs (its dataset is not on this machine)"


def reference_logits(ws, v, x):
    import torch

    with torch.no_grad():
        return ws.load_model(v)(x).float()


def tolerance_for(ws, v, fmt: str) -> dict:
    mode = quant_mode(ws, v)
    if fmt != "onnx":
        return EXACT
    if mode in INT8:
        return ONNX_INT8
    if mode in ("fp16", "bf16"):
        return ONNX_HALF
    return ONNX_FLOAT


def compare(ref, out, tol: dict) -> dict:
    """max abs diff, top-1 agreement and whether both are within `tol`."""
    import torch

    out = torch.as_tensor(out).float()
    if out.shape != ref.shape:
        return {"ok": False, "max_abs_diff": None, "agreement": None,
                "why": f"outputs of shape {tuple(out.shape)}, expected {tuple(ref.shape)}"}
    diff = float((out - ref).abs().max()) if ref.numel() else 0.0
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    limit = tol["rel"] * max(1.0, float(ref.abs().max()))
    ok = diff <= limit and agree >= tol["agreement"] and bool(torch.isfinite(out).all())
    why = "" if ok else (f"max abs diff {diff:.3g} (limit {limit:.3g}), top-1 agreement {agree:.1%} "
                         f"(needs {tol['agreement']:.0%})")
    return {"ok": ok, "max_abs_diff": diff, "agreement": agree, "limit": limit, "why": why}


# ---------------------------------------------------------------- the fresh-process check

def _run_fresh(checks: list[dict], inputs: Path, work: Path, timeout: float = VERIFY_TIMEOUT_S) -> dict:
    """Run `python -m core.io.export.verify` in a new process on `checks`; returns its report."""
    import torch  # noqa: F401  (torch is imported by the caller anyway)

    spec = work / "verify.json"
    report = work / "report.json"
    spec.write_text(json.dumps({"inputs": str(inputs), "checks": checks, "report": str(report)}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-m", "core.io.export.verify", "verify", str(spec)], cwd=str(work), env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"the reload check did not finish in {timeout:.0f} s"}
    if proc.returncode != 0 or not report.exists():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        return {"error": f"the reload check failed (exit {proc.returncode}): {tail[0][:300]}"}
    return json.loads(report.read_text())


def _judge(ws, v, fmt: str, check: dict, ref) -> dict:
    """One check's report -> {ok, max_abs_diff, agreement, why} against the reference logits."""
    import torch

    if check.get("error"):
        return {"ok": False, "why": check["error"]}
    if fmt == "recipe":
        ok = check.get("recipe") == json.loads(json.dumps(v.recipe, default=str))
        return {"ok": ok, "why": "" if ok else "the reloaded recipe differs from the variant's",
                "note": check.get("replay_note", "")}
    logits = check.get("logits")
    if logits is None:
        return {"ok": False, "why": "no outputs came back"}
    return compare(ref, torch.tensor(logits), tolerance_for(ws, v, fmt))


def export(ws, variant, fmt: str, *, force: bool = False, n_images: int = N_IMAGES) -> ExportResult:
    """Produce `fmt` for `variant`, reload it in a fresh process and compare; cached per (variant,
    format). A format that does not apply comes back with status "unavailable" and the reason."""
    return export_many(ws, variant, [fmt], force=force, n_images=n_images)[fmt]


def export_all(ws, variant, *, force: bool = False, n_images: int = N_IMAGES) -> dict[str, ExportResult]:
    """Every format (one fresh process checks all the new files at once)."""
    return export_many(ws, variant, FORMATS, force=force, n_images=n_images)


@dataclass
class _Pending:
    fmt: str
    work: Path
    result: ExportResult
    files: list[Path] = field(default_factory=list)
    parts: list[tuple[str, list[Path]]] = field(default_factory=list)     # bundle: (format, files)
    skipped: list[tuple[str, str]] = field(default_factory=list)          # bundle: (format, why left out)


def export_many(ws, variant, fmts, *, force: bool = False, n_images: int = N_IMAGES) -> dict[str, ExportResult]:
    """Export several formats of one variant: every new file (the bundle's zip included) is checked
    by ONE fresh process, since starting Python with torch is most of a check's time."""
    for fmt in fmts:
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    v = variant if not isinstance(variant, str) else ws.get_variant(variant)
    out: dict[str, ExportResult] = {}
    todo = [f for f in FORMATS if f in fmts]           # bundle last: it reuses the others' files
    if not force:
        for fmt in list(todo):
            hit = cached_result(ws, v, fmt)
            if hit is not None:
                out[fmt] = hit
                todo.remove(fmt)
    if not todo:
        return out
    t0 = time.time()
    drop_orphans(ws)
    root = Path(ws.root) / "exports"
    root.mkdir(parents=True, exist_ok=True)
    pending: dict[str, _Pending] = {}
    scratch = Path(tempfile.mkdtemp(prefix=f".{v.id}-check-", dir=root))
    try:
        for fmt in todo:
            work = Path(tempfile.mkdtemp(prefix=f".{v.id}-{fmt}-", dir=root))
            result = ExportResult(v.id, fmt, "failed", filename=file_name(v, fmt))
            reason = unavailable_reason(ws, v, fmt)
            if not reason:
                try:
                    pend = _Pending(fmt, work, result)
                    if fmt == "bundle":
                        _build_bundle(ws, v, pend, pending)
                    else:
                        (work / "files").mkdir()
                        pend.files = WRITERS[fmt](ws, v, work / "files" / file_name(v, fmt))
                    pending[fmt] = pend
                    continue
                except ExportUnavailable as e:
                    reason = str(e)
                    shutil.rmtree(work / "files", ignore_errors=True)
            result.status, result.message, result.filename = "unavailable", reason, None
            result.seconds = time.time() - t0
            out[fmt] = _store(ws, v, fmt, work, result)
        if pending:
            x, labels = test_inputs(ws, v, n_images)
            for p in pending.values():
                p.result.inputs = input_words(labels)
            ref = reference_logits(ws, v, x)
            from safetensors.torch import save_file
            inputs = scratch / "inputs.safetensors"
            save_file({"x": x.contiguous()}, str(inputs))
            checks = [_check_spec(p) for p in pending.values()]
            report = _run_fresh(checks, inputs, scratch)
            for i, p in enumerate(pending.values()):
                check = report["checks"][i] if "error" not in report else {"error": report["error"]}
                _finish(ws, v, p, check, ref, t0)
                out[p.fmt] = _store(ws, v, p.fmt, p.work, p.result)
    except BaseException:
        for p in pending.values():
            shutil.rmtree(p.work, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {f: out[f] for f in FORMATS if f in out}


def _check_spec(p: _Pending) -> dict:
    if p.fmt == "bundle":
        return {"format": "bundle", "path": str(p.files[0]),
                "members": [{"format": f, "names": [q.name for q in files]} for f, files in p.parts]}
    d = {"format": p.fmt, "path": str(p.files[0])}
    if p.fmt == "compact":
        d["loader"] = str(next(q for q in p.files if q.name == LOADER_FILE))
    return d


def _finish(ws, v, p: _Pending, check: dict, ref, t0: float) -> None:
    """Judge a pending export's check; a file that failed is deleted, never offered."""
    r = p.result
    r.n_images = int(ref.shape[0])
    if p.fmt == "bundle":
        _judge_bundle(ws, v, p, check, ref)
    else:
        verdict = _judge(ws, v, p.fmt, check, ref)
        r.path, r.extras = str(p.files[0]), [str(q) for q in p.files[1:]]
        r.size_bytes = p.files[0].stat().st_size
        r.max_abs_diff, r.agreement = verdict.get("max_abs_diff"), verdict.get("agreement")
        if p.fmt == "recipe":
            r.n_images = None
        else:
            r.tolerance = tolerance_for(ws, v, p.fmt)
        r.status = "ok" if verdict["ok"] else "failed"
        r.message = _ok_message(p.fmt, r) if verdict["ok"] else f"reload check failed: {verdict['why']}"
        if verdict.get("note"):
            r.message += f" (note: {verdict['note']})"
    if r.status != "ok":
        shutil.rmtree(p.work / "files", ignore_errors=True)
        r.path, r.extras, r.size_bytes = None, [], None
    r.seconds = time.time() - t0


def _ok_message(fmt: str, r: ExportResult) -> str:
    if fmt == "recipe":
        return "reloaded in a fresh process: valid JSON, the same steps as the variant's recipe"
    same = "identical predictions" if r.agreement == 1.0 else f"top-1 agreement {r.agreement:.1%}"
    return (f"reloaded in a fresh process and run on {r.n_images} {r.inputs}: {same}, "
            f"max abs logit difference {r.max_abs_diff:.2g}")


README_HEAD = """{name} ({id}), exported by the Compression Workbench on {date}
Dataset: {dataset}; kind: {kind}; test accuracy {acc}; measured on {device}.

Every file below was loaded again from this zip in a fresh Python process and run on {n}
{inputs} before the zip was offered; the check's numbers are given with each file.
model_card.json says how an image becomes the input tensor (resize, greyscale/RGB,
normalisation) and names the classes.
"""


def _build_bundle(ws, v, p: _Pending, pending: dict[str, _Pending]) -> None:
    """The zip of every other format that applies: files made in this call, or verified cached ones."""
    for fmt in FORMATS[:-1]:
        if fmt in pending:
            p.parts.append((fmt, pending[fmt].files))
            continue
        reason = unavailable_reason(ws, v, fmt)
        hit = cached_result(ws, v, fmt)
        if reason is None and hit is not None and hit.status == "unavailable":
            reason = hit.message
        if reason:
            p.skipped.append((fmt, reason))
            continue
        if hit is not None and hit.ok:
            p.parts.append((fmt, [Path(hit.path), *map(Path, hit.extras)]))
            continue
        sub = p.work / "parts" / fmt
        sub.mkdir(parents=True)
        try:
            p.parts.append((fmt, WRITERS[fmt](ws, v, sub / file_name(v, fmt))))
        except ExportUnavailable as e:
            p.skipped.append((fmt, str(e)))
    if not p.parts:
        raise ExportUnavailable("no format applies to this variant")
    zpath = p.work / "files" / file_name(v, "bundle")
    zpath.parent.mkdir()
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(CARD_FILE, _card_bytes(ws, v))
        for _, files in p.parts:
            for q in files:
                if q.name != CARD_FILE:
                    z.write(q, q.name)
    p.files = [zpath]


def _judge_bundle(ws, v, p: _Pending, check: dict, ref) -> None:
    import datetime as dt

    r, members = p.result, []
    checks = check.get("members", [])
    all_ok = not check.get("error")
    m = v.metrics
    acc = f"{m['accuracy']:.2%}" if isinstance(m.get("accuracy"), (int, float)) else "not measured"
    readme = [README_HEAD.format(name=v.name, id=v.id, date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
                                 dataset=v.dataset, kind=v.kind_label, acc=acc, device=m.get("device", "?"),
                                 n=int(ref.shape[0]), inputs=r.inputs)]
    for i, (fmt, files) in enumerate(p.parts):
        c = checks[i] if i < len(checks) else {"error": check.get("error", "not checked")}
        verdict = _judge(ws, v, fmt, c, ref)
        all_ok &= verdict["ok"]
        members.append({"format": fmt, "files": [q.name for q in files], "ok": verdict["ok"],
                        "max_abs_diff": verdict.get("max_abs_diff"), "agreement": verdict.get("agreement"),
                        "why": verdict.get("why", "")})
        info = FORMAT_INFO[fmt]
        numbers = ("" if fmt == "recipe" or not verdict["ok"] else
                   f"\nCheck: max abs logit difference {verdict['max_abs_diff']:.2g}, top-1 agreement "
                   f"{verdict['agreement']:.1%} (tolerance {tolerance_for(ws, v, fmt)}).")
        readme.append(f"\n== {', '.join(q.name for q in files)}  ({info.title})\n{info.purpose}\n"
                      f"To load it: {info.needs}{numbers}\n")
    for fmt, why in p.skipped:
        readme.append(f"\n== not included: {FORMAT_INFO[fmt].title}\n{why}\n")
    r.members = members
    numeric = [mm for mm in members if mm["max_abs_diff"] is not None]
    r.max_abs_diff = max((mm["max_abs_diff"] for mm in numeric), default=None)
    r.agreement = min((mm["agreement"] for mm in numeric), default=None)
    shutil.rmtree(p.work / "parts", ignore_errors=True)
    if all_ok:   # the README goes in last: it reports the checks just run
        with zipfile.ZipFile(p.files[0], "a", zipfile.ZIP_DEFLATED) as z:
            z.writestr("README.txt", "".join(readme))
        r.status, r.path, r.size_bytes = "ok", str(p.files[0]), p.files[0].stat().st_size
        r.message = (f"{len(members)} formats ({', '.join(mm['format'] for mm in members)}) + model card + "
                     "README.txt; every member reloaded from the zip in a fresh process and matched"
                     + (f"; left out: {', '.join(f for f, _ in p.skipped)}" if p.skipped else ""))
    else:
        bad = [f"{mm['format']}: {mm['why']}" for mm in members if not mm["ok"]] or [check.get("error", "?")]
        r.status, r.message = "failed", "reload check failed: " + "; ".join(bad)


def save_to(result: ExportResult, out: str | os.PathLike) -> list[Path]:
    """Copy a verified export to `out` (a file path, or an existing directory); extras (model card,
    loader) go beside it. Returns the written paths."""
    if not result.ok or not result.path:
        raise ValueError(f"{result.format} export of {result.variant_id} is not available: {result.message}")
    out = Path(out)
    if out.is_dir():
        out = out / (result.filename or Path(result.path).name)
    if not out.parent.is_dir():
        raise ValueError(f"cannot write {out}: the folder {out.parent} does not exist")
    shutil.copyfile(result.path, out)
    written = [out]
    for extra in result.extras:
        dest = out.with_name(Path(extra).name)
        shutil.copyfile(extra, dest)
        written.append(dest)
    return written
