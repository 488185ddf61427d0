"""Benchmark: the cost of one live TAESD preview on this machine (torch, full-size TAESD architecture,
random weights), at full size and at the CPU preview size. Compare with a U-Net step (bench.edge).

    python -m bench.preview [--side 512] [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=512, help="image side (latents are side / 8)")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)

    import torch

    from modules.families import Family
    from modules.taesd import CPU_PREVIEW_MAX_SIDE, TaeDecoder, preview_latents, random_taesd

    tae = TaeDecoder(random_taesd(Family.SD15, seed=0))
    latents = torch.randn(1, 4, args.side // 8, args.side // 8)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    for name, lat in (("full size", latents), (f"CPU preview (<= {CPU_PREVIEW_MAX_SIDE} px)",
                                               preview_latents(latents, CPU_PREVIEW_MAX_SIDE))):
        tae.decode(lat)  # warm-up
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            image = tae.decode(lat)[0]
            times.append(time.perf_counter() - start)
        print(f"{name}: {image.size[0]}x{image.size[1]} in {statistics.median(times):.3f} s "
              f"(median of {args.runs}; {', '.join(f'{t:.3f}' for t in times)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
