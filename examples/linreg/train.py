"""Fit y = 3x - 2 (plus noise) with mini-batch SGD, in pure Python: no downloads, no GPU.

Run it as a fetchml task from the repository root:

    fetchml run examples/linreg/train.py --epochs 20

It prints the loss per epoch and writes the fitted model to $FETCHML_OUTPUT_DIR/model.json,
which fetchml collects as an artifact (`fetchml artifacts TASK_ID --download out/`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path


def make_data(n: int, seed: int) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    xs = [rng.uniform(-1, 1) for _ in range(n)]
    return [(x, 3.0 * x - 2.0 + rng.gauss(0, 0.1)) for x in xs]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fail-below", type=float, default=0.05, help="exit 1 if the final loss is above this")
    args = ap.parse_args()

    data = make_data(2000, args.seed)
    w, b = 0.0, 0.0
    rng = random.Random(args.seed + 1)
    loss = float("inf")
    for epoch in range(1, args.epochs + 1):
        rng.shuffle(data)
        for i in range(0, len(data), args.batch):
            batch = data[i : i + args.batch]
            gw = sum(2 * (w * x + b - y) * x for x, y in batch) / len(batch)
            gb = sum(2 * (w * x + b - y) for x, y in batch) / len(batch)
            w -= args.lr * gw
            b -= args.lr * gb
        loss = sum((w * x + b - y) ** 2 for x, y in data) / len(data)
        print(f"epoch {epoch:3d}  loss {loss:.5f}  w {w:+.4f}  b {b:+.4f}", flush=True)

    out = Path(os.environ.get("FETCHML_OUTPUT_DIR", "output"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_text(json.dumps({"w": w, "b": b, "loss": loss, "epochs": args.epochs}, indent=2))
    print(f"saved {out / 'model.json'}")
    if loss > args.fail_below:
        print(f"loss {loss:.5f} is above {args.fail_below}: failing")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
