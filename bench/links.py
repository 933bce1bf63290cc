"""Click-link scanning: sesd.links against the HTMLParser reading it replaced (the tests' oracle).

    .venv/bin/python bench/links.py --rounds 15

Times links() and rewrite() on a 2 kB receipt and a 50 kB newsletter, each call on its own
distinct document (urlsplit caches 128 URLs; one repeated document would flatter both), and
prints process CPU per call (best of --rounds) and the speed-up over the oracle.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' oracle

from common import table, write_results

from sesd.links import links, rewrite
from tests.test_links_oracle import (
    NEWSLETTER_50K,
    RECEIPT,
    oracle_links,
    oracle_rewrite,
)


def variants(html: str, n: int) -> list[str]:
    """n distinct copies: every https:// link gets a per-copy host prefix."""
    return [html.replace("https://", f"https://v{i}.") for i in range(n)]


def best_cpu(function: Callable[[str], object], docs: list[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for doc in docs:
            function(doc)
        best = min(best, (time.process_time() - start) / len(docs))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--docs", type=int, default=200, help="distinct documents per round")
    args = parser.parse_args()

    def mark(i: int, url: str) -> str:
        return f"https://t.example/c/{i}"

    calls: dict[str, tuple[Callable[[str], object], Callable[[str], object]]] = {
        "links": (links, oracle_links),
        "rewrite": (lambda h: rewrite(h, mark), lambda h: oracle_rewrite(h, mark)),
    }
    rows = []
    for name, html in (("receipt 2 kB", RECEIPT), ("newsletter 50 kB", NEWSLETTER_50K)):
        docs = variants(html, args.docs if len(html) < 10_000 else max(20, args.docs // 10))
        for call, (ours, oracle) in calls.items():
            fast = best_cpu(ours, docs, args.rounds)
            slow = best_cpu(oracle, docs, args.rounds)
            rows.append({"document": name, "call": call, "sesd_us": fast * 1e6,
                         "htmlparser_us": slow * 1e6, "speedup": slow / fast})
    print(table(rows))
    print("results:", write_results("links", {"rows": rows, "rounds": args.rounds}))


if __name__ == "__main__":
    main()
