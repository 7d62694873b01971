"""Training: resume equivalence, the divergence guard and both protocols on a tiny model."""
import dataclasses

import pytest
import torch

from localist_core import load_model
from localist_core.experiments.train import LAST, TrainingDiverged, train
from localist_core.model.config import TrainConfig, preset


def _cfg(**kw):
    return TrainConfig(**{**preset("tiny").train, "max_steps": 12, "ckpt_interval": 4,
                          "eval_interval": 6, **kw})


@pytest.mark.parametrize("protocol,form,lam", [("penalty", "attention", 0.6),
                                               ("penalty", "weights", 1.0),
                                               ("dial", "none", 0.0)])
def test_resume_gives_the_same_weights(tmp_path, tiny_model_cfg, tiny_corpus, protocol, form, lam):
    mcfg = dataclasses.replace(tiny_model_cfg, dropout=0.1)
    cfg = _cfg(protocol=protocol, penalty_form=form, locality=lam)
    straight = train(mcfg, cfg, tiny_corpus, tmp_path / "a", progress=False)
    part = train(mcfg, cfg, tiny_corpus, tmp_path / "b", progress=False, stop_after=5)
    assert part.stopped == "interrupted" and part.steps == 5
    assert not (tmp_path / "b" / "model.safetensors").exists()  # only the resumable state
    resumed = train(mcfg, cfg, tiny_corpus, tmp_path / "b", progress=False)
    assert resumed.steps == straight.steps == 12
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda hist: [{k: v for k, v in h.items() if k != "train_seconds"} for h in hist]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)
    loaded, _ = load_model(tmp_path / "b")
    assert all(torch.equal(loaded.state_dict()[k], b[k]) for k in b)
    assert (tmp_path / "b" / LAST / "trainer.safetensors").is_file()


def test_training_lowers_the_loss(tiny_model_cfg, tiny_corpus):
    res = train(tiny_model_cfg, _cfg(max_steps=30, eval_interval=10), tiny_corpus, progress=False)
    ppl = [h["valid_ppl"] for h in res.history]
    assert ppl[-1] < ppl[0] < len(tiny_corpus.tokenizer) * 1.5


@pytest.mark.slow
def test_weights_penalty_shrinks_the_cross_channel(tiny_model_cfg, tiny_corpus):
    def cross_norm(lam):
        cfg = _cfg(penalty_form="weights", locality=lam, penalty_scale=1.0, max_steps=30)
        model = train(tiny_model_cfg, cfg, tiny_corpus, progress=False).model
        return model.cross_channel_group_norm().item()
    assert cross_norm(1.0) < 0.8 * cross_norm(0.0)


def test_divergence_stops_with_a_clear_message(tiny_model_cfg, tiny_corpus):
    with pytest.raises(TrainingDiverged, match="(?i)lower lr"):
        train(tiny_model_cfg, _cfg(lr=1e30, grad_clip=1e30, warmup_steps=0), tiny_corpus,
              progress=False)


def test_resume_with_another_config_is_refused(tmp_path, tiny_model_cfg, tiny_corpus):
    train(tiny_model_cfg, _cfg(), tiny_corpus, tmp_path, progress=False, stop_after=4)
    with pytest.raises(ValueError, match="another config"):
        train(tiny_model_cfg, _cfg(lr=1e-3), tiny_corpus, tmp_path, progress=False)


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no handler catches it."""


def test_a_kill_while_checkpointing_still_resumes_exactly(tmp_path, tiny_model_cfg, tiny_corpus,
                                                          monkeypatch):
    import localist_core.experiments.train as trainer
    mcfg = dataclasses.replace(tiny_model_cfg, dropout=0.1)
    cfg = _cfg(protocol="dial", penalty_form="none", threads=1)  # 1 thread: no OpenMP spinning
    straight = train(mcfg, cfg, tiny_corpus, tmp_path / "a", progress=False, eval_tokens=2048)
    real, writes = trainer.atomic_write, []

    def dying(path, write):
        if path.name == trainer.TRAINER_STATE:
            writes.append(path)
            if len(writes) == 2:   # the step-8 checkpoint, before any of its files is written
                raise _Killed
        real(path, write)

    monkeypatch.setattr(trainer, "atomic_write", dying)
    with pytest.raises(_Killed):
        train(mcfg, cfg, tiny_corpus, tmp_path / "b", progress=False, eval_tokens=2048)
    monkeypatch.setattr(trainer, "atomic_write", real)
    stale = tmp_path / "b" / LAST / ".trainer.safetensors.x1y2_k9q.tmp"   # mkstemp-shaped
    stale.write_bytes(b"half a file")
    resumed = train(mcfg, cfg, tiny_corpus, tmp_path / "b", progress=False, eval_tokens=2048)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not stale.exists()


def test_training_removes_only_its_own_temp_files(tmp_path, tiny_model_cfg, tiny_corpus):
    """A killed writer's temp files go; a file of the same shape that is not ours stays."""
    out = tmp_path / "run"
    out.mkdir()
    mine = ".config.json.ab12_x9z.tmp"
    others = [".notes.tmp", ".config.json.tmp", ".x.txt.abcdefgh.tmp"]
    for name in [mine, *others]:
        (out / name).write_text("x")
    cfg = TrainConfig(**{**preset("tiny").train, "max_steps": 2})
    train(tiny_model_cfg, cfg, tiny_corpus, out, progress=False)
    assert sorted(p.name for p in out.glob(".*.tmp")) == sorted(others)


class _FastClock:
    """A stand-in for the ``time`` module train reads: every call to perf_counter is
    ``per_call`` seconds after the last, as on a very slow machine."""

    def __init__(self, per_call: float):
        self.now, self.per_call = 0.0, per_call

    def perf_counter(self) -> float:
        self.now += self.per_call
        return self.now

    def time(self) -> float:
        return self.perf_counter()


def test_a_step_bounded_run_has_the_same_weights_at_any_speed(tiny_model_cfg, tiny_corpus,
                                                              monkeypatch):
    """max_steps bounds the run and the schedule follows steps: a slow clock changes nothing
    as long as the time budget is not reached."""
    import localist_core.experiments.train as trainer
    mcfg = dataclasses.replace(tiny_model_cfg, dropout=0.1)
    cfg = _cfg(protocol="dial", penalty_form="none", time_budget_s=1e9, max_steps=8,
               eval_interval=4)
    normal = train(mcfg, cfg, tiny_corpus, progress=False, eval_tokens=2048)
    monkeypatch.setattr(trainer, "time", _FastClock(per_call=3600.0))   # an hour per call
    slow = train(mcfg, cfg, tiny_corpus, progress=False, eval_tokens=2048)
    assert normal.stopped == slow.stopped == "max_steps" and normal.steps == slow.steps == 8
    assert slow.train_seconds >= 8 * 3600           # the fake clock was the one read
    a, b = normal.model.state_dict(), slow.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["lr"] for h in slow.history] == [h["lr"] for h in normal.history]


def test_the_reproduction_presets_are_step_bounded():
    for name in ("cpu-ref", "paper"):
        cfg = TrainConfig(**preset(name).train)
        assert cfg.lr_by_time is False, name


def test_a_run_stopped_by_the_time_budget_records_it(tmp_path, tiny_model_cfg, tiny_corpus,
                                                     monkeypatch, capsys):
    import localist_core.experiments.train as trainer
    monkeypatch.setattr(trainer, "time", _FastClock(per_call=100.0))    # 100 s a step
    cfg = _cfg(time_budget_s=250.0, max_steps=12)
    res = train(tiny_model_cfg, cfg, tiny_corpus, tmp_path, progress=True, eval_tokens=2048)
    assert res.stopped == "time_budget" and res.steps == 3
    assert "stopped early" in capsys.readouterr().out
    model, _ = load_model(tmp_path)
    assert model.meta["stopped"] == "time_budget" and model.meta["step"] == 3
