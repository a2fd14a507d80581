"""probe_parked.py: which frames it asks about, the episode split, and that its lamp detector finds a lamp token."""
import numpy as np
import torch

import probe_parked as pp
from data import DrivingData


def test_car_frames_are_cars_and_parked_cars_within_reach(tiny_dataset):
    data = DrivingData(tiny_dataset)
    n = len(data)
    data.object = torch.tensor([pp.CAR, pp.PARKED, 0] * (n // 3) + [pp.CAR] * (n % 3))
    data.object_dist = torch.tensor([10.0, 50.0, 5.0, float("nan")] * (n // 4) + [10.0] * (n % 4))
    got = pp.car_frames(data, max_dist=30.0)
    assert len(got) > 0
    for i in got:
        assert int(data.object[i]) in (pp.CAR, pp.PARKED) and float(data.object_dist[i]) < 30.0


def test_held_out_episodes_split_whole_episodes(tiny_dataset):
    data = DrivingData(tiny_dataset)
    idx = np.arange(len(data))
    data.records = [dict(r, scenario="following", seed=i % 4) for i, r in enumerate(data.records)]  # 4 episodes
    held = pp.held_out_episodes(data, idx, frac=0.5)
    ep = [(r["scenario"], r["seed"]) for r in data.records]
    assert len({e for e, h in zip(ep, held) if h}) == 2
    for i in idx:  # every frame of an episode on the same side
        assert all(held[j] == held[i] for j in idx if ep[j] == ep[i])
    data.records = [dict(r, seed=0) for r in data.records]  # one episode: fitted, nothing held out
    assert not pp.held_out_episodes(data, idx, frac=0.5).any()


def test_lamp_detector_finds_the_one_token_that_carries_the_lamp():
    torch.manual_seed(0)
    x = torch.randn(200, 16, 8)
    y = (torch.arange(200) % 5 == 0).float()
    x[y > 0, 3, 0] += 8.0  # a parked car: one token lights up in one channel
    det = pp.lamp_detector(x[:150], y[:150], steps=300)
    with torch.no_grad():
        pred = det(x[150:]).squeeze(-1).amax(1) > 0
    parked_right, queued_right = pp.recall(pred, y[150:] > 0)
    assert parked_right > 0.9 and queued_right > 0.9
