"""Streamed evaluation: the windows it reads cover every target exactly once."""
import torch

from localist_core.analysis.evaluate import eval_windows


def test_eval_windows_cover_every_target_once():
    stream = torch.arange(1000)
    targets = torch.cat([y.flatten() for _, y in eval_windows(stream, 64, batch_size=4)])
    assert torch.equal(targets, stream[1:])
