"""APE on a GPU: model-only events/s with the ids already on the device (the kernel's ceiling,
next to `bench.scoring`'s end-to-end `score_many`), and the learn rate on CUDA against CPU.

    python -m bench.ape_gpu
"""

from __future__ import annotations

import sys
import time

import torch

from bench.scoring import TYPES, synthetic
from detectors.ape import APEDetector


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: bench.ape_gpu measures the GPU only", file=sys.stderr)
        return 1
    d = APEDetector(TYPES, epochs=1)
    d.learn_many(synthetic(50_000, 100_000, 1))
    print("device", d.device, "vocab", len(d.vocab))
    for b in (16384, 65536, 1 << 20):
        x = torch.randint(0, len(d.vocab), (b, len(TYPES)), device="cuda")
        with torch.inference_mode():
            for _ in range(3):
                d.model(x)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(20):
                d.model(x)
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t) / 20
        print(f"model-only batch {b}: {b / dt:,.0f} events/s")
    ev = synthetic(100_000, 100_000, 3)
    for dev in ("cuda", "cpu"):
        d2 = APEDetector(TYPES, epochs=1, device=dev)
        t = time.perf_counter()
        d2.learn_many(ev)
        if dev == "cuda":
            torch.cuda.synchronize()
        print(
            f"learn_many 100k events, 1 epoch, {dev} ({torch.get_num_threads()} threads): "
            f"{len(ev) / (time.perf_counter() - t):,.0f} events/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
