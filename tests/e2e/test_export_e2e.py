"""In a real browser: on the Export page, check the safetensors format of the shipped LeNet-5, see
the download button appear only after the check, download the file, and load it in a fresh Python
process that rebuilds the model from the file alone (arch in its metadata) and predicts exactly as
the workspace variant does."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from playwright.sync_api import expect

from core.io.export import pipeline as ex

pytestmark = pytest.mark.e2e

LOAD = """
import json, sys, torch
from safetensors import safe_open
from safetensors.torch import load_file
from core.models.registry import build_from_arch
path, inputs = sys.argv[1], sys.argv[2]
with safe_open(path, "pt") as f:
    meta = f.metadata()
model = build_from_arch(json.loads(meta["arch"]), load_file(path)).eval()
x = load_file(inputs)["x"]
with torch.no_grad():
    print(json.dumps({"logits": model(x).tolist(), "card_id": json.loads(meta["model_card"])["id"]}))
"""


def test_download_safetensors_and_load_it_in_a_fresh_process(new_page, e2e_workspace, lenet5_variant, settle,
                                                              tmp_path):
    from safetensors.torch import save_file

    ws, v = e2e_workspace, lenet5_variant
    ex.clear_cache(ws, v.id)
    page = new_page(f"/export?variant={v.id}")
    card = page.locator(".st-key-export-card-safetensors")
    expect(card.get_by_text("safetensors weights + model card")).to_be_visible(timeout=60_000)
    name = ex.file_name(v, "safetensors")
    expect(page.get_by_role("button", name=f"Download {name}")).to_have_count(0)   # not before the check

    card.get_by_role("button", name="Export and check").click()
    download_button = card.get_by_role("button", name=f"Download {name}")
    expect(download_button).to_be_visible(timeout=180_000)
    settle(page)
    expect(card.get_by_text("identical predictions")).to_be_visible()

    with page.expect_download(timeout=60_000) as info:
        download_button.click()
    dl = info.value
    assert dl.suggested_filename == name
    path = tmp_path / name
    dl.save_as(path)

    x, _ = ex.test_inputs(ws, v, 32)
    save_file({"x": x.contiguous()}, str(tmp_path / "x.safetensors"))
    proc = subprocess.run([sys.executable, "-c", LOAD, str(path), str(tmp_path / "x.safetensors")], cwd=ex.REPO_ROOT,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-1000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["card_id"] == v.id
    ref = ex.reference_logits(ws, v, x)
    assert torch.allclose(torch.tensor(out["logits"]), ref, atol=1e-4, rtol=0)
    assert torch.equal(torch.tensor(out["logits"]).argmax(1), ref.argmax(1))
