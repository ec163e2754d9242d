"""Retriever tuning on a large knowledge base: wall time, texts MiniLM embeds, pairs and peak memory.

Usage: python bench/tune_scale.py [--chunks 10000] [--embedder static] [--max-distil-texts 20000] [--max-queries 20000]
Tunes on a synthetic knowledge base (`index_common.write_corpus`: articles of ten sections, one chunk each, built
from the demo articles' sentences) without a QA file (`--no-qa`: headings, and the distil stage for a static table),
and on the demo articles the same way as the baseline in the same run. Each tuning runs in its own process, so
its peak memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from index_common import DEMO, write_corpus  # noqa: E402

CHILD = """
import json, resource, sys, time
from pathlib import Path
from bot.config import Settings
from finetune.retriever import RetrieverConfig, tune
source, data, embedder, texts, queries = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
settings = Settings(data_dir=Path(data), responder="extractive", knowledge={"source": Path(source)})
cfg = RetrieverConfig(embedder=embedder, name="scale", qa_file=None, max_distil_texts=texts, max_queries=queries)
t = time.perf_counter()
card = tune(settings, cfg)
print(json.dumps({"seconds": time.perf_counter() - t, "chunks": card["chunks"], "pairs": card["pairs"],
    "texts": card["stages"].get("distil", {}).get("texts", 0), "train_s": card["train_s"],
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(source: Path, embedder: str, texts: int, queries: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as data:
        args = [sys.executable, "-c", CHILD, str(source), data, embedder, str(texts), str(queries)]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"tuning failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--embedder", default="static", choices=["static", "minilm"])
    parser.add_argument("--max-distil-texts", type=int, default=20_000)
    parser.add_argument("--max-queries", type=int, default=20_000)
    args = parser.parse_args()
    rows = [("demo articles (baseline)", DEMO / "articles")]
    with tempfile.TemporaryDirectory() as tmp:
        kb = Path(tmp) / "kb"
        write_corpus(kb, args.chunks, seed=3)
        rows.append((f"synthetic, {args.chunks} chunks", kb))
        for label, source in rows:
            t = time.perf_counter()
            r = run(source, args.embedder, args.max_distil_texts, args.max_queries)
            print(
                f"{label:<28} {r['chunks']:6d} chunks: tuned in {r['seconds']:.0f} s ({time.perf_counter() - t:.0f} s "
                f"with the process), distil texts {r['texts']}, pairs {r['pairs']}, contrastive stage "
                f"{r['train_s']:.0f} s, peak memory {r['peak_mib']:.0f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
