"""Zero downtime: a steady customer query load while `bot index rebuild --full` runs in another process.

Usage: python bench/index_downtime.py [--rebuilds 2] [--static-model var/embedders/kestrel-static]
(`--static-model`: the service and the rebuilds use that tuned static table, copied into the run's data folder.)
Prints failed queries (target 0), answers with sources, latency before (baseline) and during the rebuilds, and
whether the running service picked up each new version without a restart.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from index_common import DEMO, ROOT, fresh_query, percentiles, questions  # noqa: E402

from bot.config import load_settings  # noqa: E402
from bot.service import Service  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rebuilds", type=int, default=2)
    parser.add_argument("--static-model", type=Path, default=None, help="a tuned static table's folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "servicebot.yaml"
        text = f"data_dir: {tmp}/data\nresponder: extractive\nknowledge:\n  source: {DEMO / 'articles'}\n"
        if args.static_model:
            name = args.static_model.name
            shutil.copytree(args.static_model, Path(tmp) / "data" / "embedders" / name)
            text += f"embedder:\n  name: static\n  config:\n    model: {name}\n"
        cfg.write_text(text)
        service = Service.start(load_settings(cfg), warm=False)
        service.index.rebuild(DEMO / "articles")
        service.warm()
        print(f"embedder: {service.pipeline.embedder.id}")
        qs = questions()
        stats: dict[str, list[float]] = {"before": [], "during": []}
        failures: list[str] = []
        versions: set[str] = set()
        phase = ["before"]
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set():
                fresh_query(service.pipeline.retriever._embedder)  # type: ignore[attr-defined]
                t = time.perf_counter()
                try:
                    reply = service.ask(qs[i % len(qs)])
                    if not reply.sources and not reply.handoff:
                        failures.append(f"no sources for {qs[i % len(qs)]!r}")
                    versions.add(service.index.status()["version"])
                except Exception as exc:  # noqa: BLE001 - every failure counts
                    failures.append(repr(exc))
                stats[phase[0]].append((time.perf_counter() - t) * 1000)
                i += 1

        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(8)
        phase[0] = "during"
        bot = Path(sys.executable).with_name("bot")
        for _ in range(args.rebuilds):
            t = time.perf_counter()
            done = subprocess.run(
                [str(bot), "index", "rebuild", "--full", "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True
            )
            print(f"rebuild exit {done.returncode} in {time.perf_counter() - t:.1f}s: {done.stdout.strip()[-160:]}")
        time.sleep(2)
        stop.set()
        worker.join()
        print(f"failed queries: {len(failures)} {failures[:3]}")
        print(f"queries before (baseline): {percentiles(stats['before'])}")
        print(f"queries during rebuilds:   {percentiles(stats['during'])}")
        print(f"versions served without restart: {len(versions)} (expected {args.rebuilds + 1})")


if __name__ == "__main__":
    main()
