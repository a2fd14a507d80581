"""ONNX Runtime latency of the bundled driving graphs on 1 and 2 threads, and this machine's peak f32 GEMM throughput
(PyTorch's sgemm), for `cargo xtask bench` to set beside tract's figures measured in the same run.

    python bench_ort.py --models models/student --runs 50 --json out.json

Latencies are medians over `runs` inferences after 3 warm-up runs, the models measured round-robin (as
`rtvla model bench` does) so that a change in the machine's load hits them all alike.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from export import ort_latency

MODELS = ("student", "teacher", "student_int8")


def peak_gemm_gflops(threads: int, sizes=(256, 512, 1024), runs: int = 10) -> dict:
    """Best median f32 GEMM throughput over a few square sizes: the roof the student's GFLOP/s is read against."""
    torch.set_num_threads(threads)
    best = {"gflops": 0.0, "n": 0}
    with torch.no_grad():
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            torch.mm(a, b)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                torch.mm(a, b)
                times.append(time.perf_counter() - t0)
            gflops = 2 * n**3 / float(np.median(times)) / 1e9
            if gflops > best["gflops"]:
                best = {"gflops": gflops, "n": n}
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="directory of the bundled models (models/student)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    paths = {m: os.path.join(a.models, f"{m}.onnx") for m in MODELS}
    paths = {m: p for m, p in paths.items() if os.path.exists(p)}
    out: dict = {"ort_ms": {}, "peak_gemm": {}, "onnxruntime": __import__("onnxruntime").__version__,
                 "torch": torch.__version__}
    for t in (int(x) for x in a.threads.split(",")):
        out["ort_ms"][str(t)] = ort_latency(paths, runs=a.runs, threads=t)
        out["peak_gemm"][str(t)] = peak_gemm_gflops(t)
        print(f"onnxruntime {t} thread(s), median ms: "
              + ", ".join(f"{k} {v:.3f}" for k, v in out["ort_ms"][str(t)].items())
              + f"; peak sgemm {out['peak_gemm'][str(t)]['gflops']:.1f} GFLOP/s (n={out['peak_gemm'][str(t)]['n']})")
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
