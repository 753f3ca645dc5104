"""Makes the README's screenshot of the console: the guide's Marv job on the embedded SmolLM2, as
a person sees it in the browser once it has trained.

    python docs/screenshots.py [--data-dir DIR]

Starts `tunery serve` on a free port, uploads examples/data/marv.jsonl, trains with every
hyperparameter on auto (a few minutes on a 2-core CPU), and saves docs/console-job.png from
Debian's chromium through Playwright."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from openai import OpenAI

DOCS = Path(__file__).resolve().parent
MARV = DOCS.parent / "examples" / "data" / "marv.jsonl"
KEY = "sk-tunery-screenshots"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.mkdtemp()) / "data")
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "tunery", "serve", "--port", str(port), "--data-dir", str(args.data_dir)],
                              env={**os.environ, "TUNERY_API_KEY": KEY}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                if httpx.get(root + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        client = OpenAI(base_url=root + "/v1", api_key=KEY)
        file = client.files.create(file=MARV.open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="SmolLM2-135M-Instruct", training_file=file.id, suffix="marv")
        while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            time.sleep(2)
        shoot(root, job.id)
    finally:
        server.terminate()
        server.wait()


def shoot(root: str, job_id: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                             args=["--no-sandbox"] if os.geteuid() == 0 else [])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(root + "/")
        page.get_by_label("API key").fill(KEY)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Fine-tuning jobs").wait_for()
        page.goto(f"{root}/#/jobs/{job_id}")
        page.locator("figure.chart canvas").first.wait_for()
        page.get_by_role("heading", name="Checkpoints").wait_for()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(DOCS / "console-job.png"), full_page=False)
        browser.close()


if __name__ == "__main__":
    main()
