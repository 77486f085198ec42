"""LazyAdam's sparse step: the indexing it used before against the one it uses now.

Run (from the repository root)::

    .venv/bin/python benchmarks/optim_step.py            # configs/mlp-ngrams.yaml, 51k titles
    .venv/bin/python benchmarks/optim_step.py --config configs/mlp.yaml --repeats 5

Trains the same config twice per repeat on quality.py's split of meli-es-51k (80 %, 5 % of
it for validation), alternating the two steps so that drifts of the machine's load hit both
alike: once with `LazyAdam.step` as it is, once with the step it replaced (advanced
indexing `m[rows]`, `index_copy_` and `index_add_`, kept below). Same seed, so the two runs
must end with the same validation BAC bit for bit (checked); reported: the training seconds
of each (the epochs' passes, evaluation excluded), mean ± std over the repeats, and their
ratio.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@torch.no_grad()
def previous_step(self, closure=None):
    """LazyAdam.step as it was before the change (its sparse branch is what differs)."""
    for group in self.param_groups:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        decay, decoupled = group["weight_decay"], group["decoupled"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            bias1 = 1 - beta1 ** state["step"]
            bias2 = math.sqrt(1 - beta2 ** state["step"])
            m, v = state["exp_avg"], state["exp_avg_sq"]
            if p.grad.is_sparse:
                grad = p.grad.coalesce()
                rows, values = grad.indices()[0], grad.values()
                if decay:
                    if decoupled:
                        p.index_copy_(0, rows, p[rows] * (1 - lr * decay))
                    else:
                        values = values + decay * p[rows]
                m_rows = m[rows].mul_(beta1).add_(values, alpha=1 - beta1)
                v_rows = v[rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
                m.index_copy_(0, rows, m_rows)
                v.index_copy_(0, rows, v_rows)
                update = m_rows / (v_rows.sqrt_().div_(bias2).add_(eps))
                p.index_add_(0, rows, update, alpha=-lr / bias1)
                continue
            grad = p.grad
            if decay:
                if decoupled:
                    p.mul_(1 - lr * decay)
                else:
                    grad = grad.add(p, alpha=decay)
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            p.addcdiv_(m, v.sqrt().div_(bias2).add_(eps), value=-lr / bias1)


from prodcat.training.optim import LazyAdam  # noqa: E402

CURRENT_STEP = LazyAdam.step


def train_once(config: Path, split: Path, step) -> tuple[float, float]:
    from prodcat.config import build_config
    from prodcat.workflow import run

    LazyAdam.step = step
    try:
        fixed = ["data.test_size=0", "training.progress=false", "tracking.enabled=false"]
        cfg = build_config(
            config, [*fixed, "data.validation_size=0.05", "training.calibrate=false"]
        )
        cfg.data.train = split / "train.jsonl.gz"
        with tempfile.TemporaryDirectory() as out:
            result = run(cfg, Path(out) / "model")
        return result.train_seconds, result.validation.balanced_accuracy
    finally:
        LazyAdam.step = CURRENT_STEP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "mlp-ngrams.yaml")
    parser.add_argument("--split", type=Path, default=ROOT / "benchmarks" / "out" / "split")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not (args.split / "train.jsonl.gz").exists():
        from quality import DATA, make_split

        make_split(DATA, args.split)
    seconds: dict[str, list[float]] = {"previous": [], "current": []}
    for repeat in range(args.repeats):
        bacs = {}
        for name, step in (("previous", previous_step), ("current", CURRENT_STEP)):
            started = time.strftime("%H:%M:%S")
            s, bacs[name] = train_once(args.config, args.split, step)
            seconds[name].append(s)
            print(
                f"[{started} load {open('/proc/loadavg').read()[:14]}] repeat {repeat} "
                f"{name}: {s:.1f} s, validation BAC {bacs[name]:.4f}",
                flush=True,
            )
        assert bacs["previous"] == bacs["current"], bacs
    for name, values in seconds.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{name:8s} step: {statistics.mean(values):6.1f} ± {std:.1f} s training")
    ratios = [p / c for p, c in zip(seconds["previous"], seconds["current"])]
    print(
        f"previous ÷ current: {statistics.mean(ratios):.2f}x "
        f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)}; n = {args.repeats}, "
        f"{args.config.name}, {torch.get_num_threads()} torch threads at start)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
