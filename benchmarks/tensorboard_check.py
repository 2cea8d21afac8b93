"""TensorBoard as `tfmmsearch train` prints it: `tensorboard --logdir RUN_DIR/logs`, in a real browser.

Starts TensorBoard on 127.0.0.1 over a run's logs dir (or over a tiny one it builds itself: a few
epochs of scalars and a projector of 64 clustered embeddings with titles and coloured
thumbnails), checks through the projector plugin's HTTP API that a run has the embedding with
its titles and sprite, then screenshots `#projector` (and `#scalars` when there are
scalars) in headless Chromium (Debian package `chromium`) and stops the server.

    .venv/bin/python benchmarks/tensorboard_check.py                  # tiny logs dir of its own
    .venv/bin/python benchmarks/tensorboard_check.py runs/myntra/logs --out /tmp/shots

Exits 2 when no Chromium is installed, 1 when TensorBoard does not serve the projector.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = "1600,1100"


def find_chromium(explicit: str | None) -> str | None:
    if explicit:
        return explicit if shutil.which(explicit) or Path(explicit).is_file() else None
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def build_tiny_logs(logs: Path) -> None:
    """Scalars for train/ and validation/, and a projector that `train` would write."""
    import numpy as np
    import tensorflow as tf

    from tfmmsearch.training.callbacks import write_embedding_projector

    for run, scale in (("train", 1.0), ("validation", 1.2)):
        writer = tf.summary.create_file_writer(str(logs / run))
        with writer.as_default():
            for epoch in range(8):
                tf.summary.scalar("epoch_loss", scale * 2.0 / (epoch + 1), step=epoch)
                tf.summary.scalar("epoch_ndcg@10", 0.9 - 0.5 * scale / (epoch + 1), step=epoch)
        writer.close()
    rng = np.random.default_rng(0)
    colours = np.array([[0.9, 0.2, 0.2], [0.2, 0.7, 0.2], [0.2, 0.3, 0.9], [0.95, 0.75, 0.1]])
    names = ["red shirt", "green dress", "blue jeans", "yellow shoes"]
    centres = rng.normal(size=(4, 16)) * 4
    labels = np.arange(64) % 4
    embeddings = (centres[labels] + rng.normal(size=(64, 16))).astype(np.float32)
    images = np.ones((64, 24, 24, 3), np.float32) * colours[labels][:, None, None, :]
    images[:, 6:18, 6:18] *= 0.6  # a darker square: a thumbnail, not a flat dot
    titles = [f"{names[label]} {i}" for i, label in enumerate(labels)]
    write_embedding_projector(logs, embeddings, titles, images)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def wait_for_projector(base: str, server: subprocess.Popen, timeout: float) -> list[str]:
    """The projector plugin's runs with embeddings, once it lists any (or [] at the deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"tensorboard exited with status {server.returncode}")
        try:
            runs = json.loads(get(base + "/data/plugin/projector/runs"))
            if runs:
                return runs
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.5)
    return []


def check_projector(base: str, run: str) -> dict:
    """What the Projector tab loads for `run`: config, titles, sprite; raises if any is missing."""
    api = base + "/data/plugin/projector"
    quoted_run = urllib.parse.quote(run)
    info = json.loads(get(f"{api}/info?run={quoted_run}"))
    summary = {"run": run, "checkpoint": info.get("modelCheckpointPath"), "embeddings": []}
    for embedding in info.get("embeddings", []):
        name = urllib.parse.quote(embedding["tensorName"])
        entry = {"tensor": embedding["tensorName"], "shape": embedding.get("tensorShape")}
        if embedding.get("metadataPath"):
            titles = get(f"{api}/metadata?run={quoted_run}&name={name}&num_rows=3")
            entry["metadata"] = embedding["metadataPath"]
            entry["first_titles"] = titles.decode("utf-8").splitlines()[:3]
        if embedding.get("sprite", {}).get("imagePath"):
            sprite = get(f"{api}/sprite_image?run={quoted_run}&name={name}")
            entry["sprite"] = embedding["sprite"]["imagePath"]
            entry["sprite_bytes"] = len(sprite)
        summary["embeddings"].append(entry)
    return summary


def has_scalars(base: str) -> bool:
    try:
        tags = json.loads(get(base + "/data/plugin/scalars/tags"))
    except urllib.error.URLError:
        return False
    return any(tags.values())


def screenshot(chromium: str, url: str, out: Path, budget_ms: int, profile: Path) -> None:
    command = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
               # WebGL (the projector's scatter plot) on the CPU: SwiftShader, since there is no GPU.
               "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={WINDOW}",
               f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url]
    out.unlink(missing_ok=True)
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if result.returncode != 0 or not out.is_file():
        raise SystemExit(f"chromium failed ({result.returncode}) on {url}:\n{result.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="?", type=Path,
                        help="a run's logs dir (RUN_DIR/logs); default: build a tiny one")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results",
                        help="where the screenshots go (default benchmarks/results)")
    parser.add_argument("--chromium", help="Chromium binary (default: the first of "
                        + ", ".join(CHROMIUM_NAMES) + " on PATH)")
    parser.add_argument("--budget-ms", type=int, default=20000,
                        help="Chromium --virtual-time-budget per page (default 20000)")
    parser.add_argument("--port", type=int, default=0, help="TensorBoard port (default: a free one)")
    args = parser.parse_args(argv)

    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("tensorboard_check: no Chromium found (looked for "
              f"{args.chromium or ', '.join(CHROMIUM_NAMES)}); on Debian: apt-get install -y chromium",
              file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="tensorboard_check_") as scratch:
        scratch = Path(scratch)
        logs = args.logs
        if logs is None:
            logs = scratch / "logs"
            build_tiny_logs(logs)
            print(f"built a tiny logs dir: {logs}")
        elif not logs.is_dir():
            print(f"tensorboard_check: {logs} is not a directory", file=sys.stderr)
            return 1
        port = args.port or free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = scratch / "tensorboard.log"
        print(f"tensorboard --logdir {logs} --host 127.0.0.1 --port {port}")
        with open(log_path, "wb") as log_file:
            server = subprocess.Popen(
                [sys.executable, "-m", "tensorboard.main", "--logdir", str(logs),
                 "--host", "127.0.0.1", "--port", str(port)],
                stdout=log_file, stderr=subprocess.STDOUT)
        try:
            runs = wait_for_projector(base, server, timeout=120)
            if not runs:
                print("tensorboard_check: the projector plugin lists no run with embeddings under "
                      f"--logdir {logs} (the Projector tab would say 'No checkpoint was found')",
                      file=sys.stderr)
                return 1
            summaries = [check_projector(base, run) for run in runs]
            print(json.dumps(summaries, indent=2))
            if not any(e.get("metadata") and e.get("sprite") for s in summaries for e in s["embeddings"]):
                print("tensorboard_check: no embedding has both titles and a sprite", file=sys.stderr)
                return 1
            args.out.mkdir(parents=True, exist_ok=True)
            pages = [("projector", "tensorboard_projector.png")]
            if has_scalars(base):
                # The legacy Scalars dashboard draws SVG; Time Series draws its lines with WebGL in a
                # worker, which headless Chromium leaves blank.
                pages.append(("scalars", "tensorboard_scalars.png"))
            for fragment, name in pages:
                shot = args.out / name
                screenshot(chromium, f"{base}/#{fragment}", shot, args.budget_ms, scratch / "profile")
                print(f"wrote {shot} ({shot.stat().st_size / 1024:.0f} KB)")
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
