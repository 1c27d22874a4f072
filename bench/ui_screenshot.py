"""Screenshot of the Prefect UI's run form for the `stego_pipeline` deployment, as a user sees it.

Starts a Prefect server on 127.0.0.1 (temporary home), registers the deployments with `stego deploy`,
opens /deployments/deployment/<id>/run in headless Chromium, and writes the PNG plus the form's
visible text (the field labels a user sees) to bench/results/.

    python bench/ui_screenshot.py [--out bench/results] [--chromium /usr/bin/chromium]

Needs Debian's chromium (`apt-get install chromium`).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.deploy import LocalCluster  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=30000"]


class TextOf(HTMLParser):
    """The visible text of a page, one string per text node (scripts and styles left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style")

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.parts.append(re.sub(r"\s+", " ", data.strip()))


def chromium(binary: str, url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
                          capture_output=True, text=True, timeout=180)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--deployment", default="stego_pipeline/stego-pipeline")
    ap.add_argument("--size", default="1400,3200", help="window width,height")
    args = ap.parse_args()
    if not Path(args.chromium).exists():
        sys.exit(f"no Chromium at {args.chromium}: apt-get install chromium, or pass --chromium PATH")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stego-ui-") as tmp:
        env = {**os.environ, "STEGO_HOME": str(Path(tmp) / "stego")}
        with LocalCluster(Path(tmp), env, deployments=[args.deployment.split("/")[1]]) as cluster:
            from prefect.client.orchestration import get_client
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: cluster.url}), get_client(sync_client=True) as client:
                deployment = client.read_deployment_by_name(args.deployment)
            page = f"http://127.0.0.1:{cluster.port}/deployments/deployment/{deployment.id}/run"
            png = args.out / "prefect_run_form.png"
            shot = chromium(args.chromium, page, Path(tmp) / "profile", f"--screenshot={png}", f"--window-size={args.size}")
            if not png.exists():
                sys.exit(f"Chromium wrote no screenshot:\n{shot.stderr[-3000:]}")
            dom = chromium(args.chromium, page, Path(tmp) / "profile2", "--dump-dom").stdout
            parser = TextOf()
            parser.feed(dom)
            (args.out / "prefect_run_form.json").write_text(json.dumps({"url": page, "text": parser.parts}, indent=1))
            print(f"wrote {png} and {args.out / 'prefect_run_form.json'} ({len(parser.parts)} text items) from {page}")


if __name__ == "__main__":
    main()
