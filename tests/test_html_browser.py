"""The HTML report in a real browser: headless Chromium renders it, shows the failing rows, and
every embedded plot decodes (the page's own script counts ``naturalWidth > 0`` images).

In CI (``CI`` set) a missing Chromium is a failure, never a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.check import check_layer
from harness.html_report import render_html
from harness.report import RunReport
from harness.reports import atomic_write_text

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    env = os.environ.get("NN_PARITY_CHROMIUM")
    if env:
        return env
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = find_chromium()
    if exe is None:
        msg = "headless Chromium not found (apt-get install chromium, or set NN_PARITY_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def run_chromium(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / "chromium-profile"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def make_plot(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    steps = np.arange(50)
    ax.plot(steps, 2.3 * np.exp(-steps / 15), label="scratch")
    ax.plot(steps, 2.3 * np.exp(-steps / 15) + 1e-3, "--", label="torch")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def buggy_report(figures: list[Path]) -> RunReport:
    import scratch

    class SoftmaxNoMean(scratch.SoftmaxWithLoss):
        def backward(self, dout=1.0):
            return super().backward(dout) * self.y.shape[0]

    report = RunReport(command="train")
    report.layers.append(check_layer(scratch.Relu(), input_shape=(3, 9), seed=0))
    bad = check_layer(SoftmaxNoMean(), input_shape=(4, 10), seed=1, name="SoftmaxWithLoss")
    bad.info["step"] = 7
    report.layers.append(bad)
    report.layers.append(check_layer(scratch.Tanh(), input_shape=(3, 9), dtype="float32"))
    report.summary = {"epochs": 2, "final loss (scratch)": 0.4123, "final loss (torch)": 0.4124,
                      "dataset": "synthetic", "rows": [{"step": 1, "status": "PASS", "loss": 2.3},
                                                       {"step": 7, "status": "FAIL", "loss": 1.1}]}
    report.figures = figures
    return report


def test_html_report_renders_with_failing_rows_and_plots(chromium: str, tmp_path: Path) -> None:
    plot = make_plot(tmp_path / "loss.png")
    report = buggy_report([plot])
    page = atomic_write_text(tmp_path / "report.html", render_html(report))
    plot.unlink()  # the report must not need the PNG beside it: it is embedded

    dom = run_chromium(chromium, tmp_path, "--dump-dom", page.as_uri()).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:2000]
    # the page's script ran after load and every image decoded
    assert 'data-images-loaded="1/1"' in body.group(0), body.group(0)
    assert 'data-images-ok="yes"' in body.group(0)
    assert 'data-loaded="yes"' in dom
    assert "<title>nn-parity train: FAIL</title>" in dom
    # the failing row is there, highlighted, with its full report
    rows = re.findall(r'<tr class="FAIL" id="layer-\d+"[^>]*>(.*?)</tr>', dom, flags=re.S)
    assert len(rows) == 1 and "SoftmaxWithLoss" in rows[0] and "step=7" in rows[0]
    assert re.search(r'<pre class="report">SoftmaxWithLoss \[float64, input \(4, 10\), seed 1\]: FAIL',
                     dom)
    assert "Mismatched elements: 40 / 40" in dom
    assert len(re.findall(r'<tr class="PASS" id="layer-', dom)) == 2
    # the summary key/value table and the table-shaped summary entry
    assert "final loss (scratch)" in dom and "0.412" in dom
    assert re.search(r"<details open=\"?\"?><summary>rows \(2 rows\)", dom)

    shot = tmp_path / "report.png"
    run_chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600",
                 "--hide-scrollbars", page.as_uri())
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)  # RGBA floats
    assert pixels.shape[0] >= 1000 and pixels.shape[1] == 1280
    header = pixels[20:60, 20:400, :3]  # the FAIL banner is red (#cf222e)
    red = (header[..., 0] > 0.7) & (header[..., 1] < 0.3) & (header[..., 2] < 0.35)
    assert red.mean() > 0.5


def test_a_broken_image_is_detected(chromium: str, tmp_path: Path) -> None:
    """The image check is not vacuous: a figure that does not decode is counted as not loaded."""
    bogus = tmp_path / "broken.png"
    bogus.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    report = RunReport(command="train", summary={"epochs": 1}, figures=[bogus])
    page = atomic_write_text(tmp_path / "broken.html", render_html(report))
    dom = run_chromium(chromium, tmp_path, "--dump-dom", page.as_uri()).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body and 'data-images-loaded="0/1"' in body.group(0) and 'data-images-ok="no"' in body.group(0)
