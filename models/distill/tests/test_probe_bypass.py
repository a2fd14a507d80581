"""probe_bypass.py: the label counts behind the "go around or wait behind it" finding."""
import json

import probe_bypass


def test_counts_split_go_around_from_waiting_behind_a_car(tmp_path):
    rows = [
        {"scenario": "parked_obstacle", "action": "go_around", "object": "parked_car", "object_dist": 20.0},
        {"scenario": "parked_obstacle", "action": "go_around", "object": "parked_car", "object_dist": 40.0},  # far
        {"scenario": "hard_brake", "action": "stop", "object": "car", "object_dist": 12.0},
        {"scenario": "following", "action": "keep_speed", "object": "car", "object_dist": 12.0},  # follows at speed
        {"scenario": "obstacle_two_ways", "action": "wait", "object": "car", "object_dist": 8.0},
        {"scenario": "lane_keep", "action": "keep_speed", "object": "none", "object_dist": None},
    ]
    (tmp_path / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert probe_bypass.counts(str(tmp_path)) == {
        ("go around", "parked_obstacle"): 1,
        ("stop behind a car", "hard_brake"): 1,
        ("wait behind a car", "obstacle_two_ways"): 1,
    }
