import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A tiny `rtvla sim dataset` if the binary is around, else a synthetic one in the same format."""
    import json
    import shutil
    import subprocess

    import numpy as np

    out = tmp_path_factory.mktemp("ds") / "d"
    rtvla = os.environ.get("RTVLA_BIN") or next(
        (p for p in [os.path.join(HERE, "..", "..", "..", "target", "release", "rtvla"),
                     "/work/main/target/release/rtvla", shutil.which("rtvla")] if p and os.path.exists(p)), None)
    if rtvla:
        subprocess.run([rtvla, "sim", "dataset", "--out", str(out), "--frames", "48", "--seeds", "0..4"], check=True,
                       capture_output=True)
        return str(out)
    out.mkdir()
    rng = np.random.default_rng(0)
    n = 48
    np.save(out / "images_0000.npy", rng.integers(0, 255, (n, 144, 256, 3), dtype=np.uint8))
    with open(out / "index.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"shard": 0, "index": i, "scenario": "following", "seed": i // 12, "step": i,
                                "speed": float(i % 10), "target_points": [[15.0, 0.0], [35.0, 0.0]],
                                "path": [[k + 1.0, 0.0] for k in range(20)],
                                "speed_wps": [[0.5 * (k + 1), 0.0] for k in range(10)],
                                "commentary": "Decelerate to stay behind the car in 12 m.", "action": "decelerate",
                                "object": "car"}) + "\n")
    with open(out / "data_card.json", "w") as f:  # what `rtvla sim dataset` writes last (pipeline.dataset_done)
        json.dump({"frames": n}, f)
    return str(out)
