"""probe_labeller.py: the expert's waypoints and commentary replace the teacher's; its features and queries stay."""
import types

import torch

import probe_labeller


def test_expert_labels_replace_the_teachers_waypoints_and_commentary():
    part = types.SimpleNamespace(path=torch.ones(2, 20, 2), speed_wps=torch.full((2, 10, 2), 2.0),
                                 tokens=torch.tensor([[1, 5, 2], [1, 6, 2]]))
    teacher_out = {"path": torch.zeros(2, 20, 2), "speed_wps": torch.zeros(2, 10, 2),
                   "tokens": torch.tensor([[1, 9, 2], [1, 9, 2]]), "feat": torch.full((2, 32, 8), 3.0),
                   "query": torch.full((2, 30, 8), 4.0)}
    labels = probe_labeller.expert_labelled(lambda _teacher, _part: dict(teacher_out))(None, part)
    assert torch.equal(labels["path"], part.path) and torch.equal(labels["speed_wps"], part.speed_wps)
    assert torch.equal(labels["tokens"], part.tokens)
    assert torch.equal(labels["feat"], teacher_out["feat"]) and torch.equal(labels["query"], teacher_out["query"])
    labels["path"][0, 0, 0] = 7.0  # a copy: training on the labels must not write into the dataset
    assert part.path[0, 0, 0] == 1.0
