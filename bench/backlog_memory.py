"""Memory with a large backlog: RSS of every sesd process while a million requests wait.

    .venv/bin/python bench/backlog_memory.py --rows 1000000 --seconds 20

Fills a database with --rows created requests due now, starts `python run.py` on it against the
SES stand-in at a steady EMAIL_RATE, samples each process's RSS every second, and prints the peak
per role. The scheduler claims only what the sender has credit for, so memory must stay flat
however large the backlog.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Standin  # noqa: E402
from sesd.store import NewMessage, Store, now_ms  # noqa: E402
from tests.service import Service  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rate", default="500")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "app.db")
        for start in range(0, args.rows, 100_000):
            n = min(100_000, args.rows - start)
            store.insert_messages([NewMessage("backlog", [f"u{start + i}@example.com"
                                                          for i in range(n)], "S", "<p>x</p>",
                                              now_ms())])
            print(f"\rfilled {start + n:,}/{args.rows:,}", end="", file=sys.stderr)
        store.close()
        print(file=sys.stderr)
        standin = Standin()
        service = Service(Path(tmp), {**standin.env(), "EMAIL_RATE": args.rate,
                                      "LOG_LEVEL": "warning"}).start()
        peaks: dict[str, float] = {}
        try:
            assert service.proc is not None
            root = psutil.Process(service.proc.pid)
            for second in range(args.seconds):
                for proc in [root, *root.children()]:
                    try:
                        role = proc.name() if "sesd" in proc.name() else " ".join(proc.cmdline())
                        rss = proc.memory_info().rss / 2**20
                    except psutil.Error:
                        continue
                    peaks[role] = max(peaks.get(role, 0.0), rss)
                print(f"\r{second + 1}/{args.seconds} s", end="", file=sys.stderr)
                time.sleep(1)
            sent = service.statuses().get(2, 0)
        finally:
            service.kill()
            standin.close()
    print(f"\nbacklog {args.rows:,}, EMAIL_RATE={args.rate}, sent during the run: {sent:,}")
    print(f"{'process':<22}{'peak RSS MB':>12}")
    for role, mb in sorted(peaks.items()):
        print(f"{role:<22}{mb:>12.1f}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"backlog_memory-{int(time.time())}.json").write_text(
        json.dumps({"rows": args.rows, "rate": args.rate, "sent": sent, "peak_rss_mb": peaks},
                   indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
