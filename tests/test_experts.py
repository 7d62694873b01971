"""Model-level recruitment (experiments/documents.py, experts.py, expert_runs.py,
expert_files.py; cli/experts.py): articles and hidden states, a child that starts as its parent,
savings scored on halves the child never trained on, the expected pool on a two-source stream,
the result files, and the CLI."""
import json

import pytest
import torch

from localist_core import save_checkpoint
from localist_core.cli import main
from localist_core.experiments.data import Corpus, encode_lines
from localist_core.experiments.documents import (
    Document,
    articles,
    document_states,
    windows,
)
from localist_core.experiments.expert_files import (
    ExpertsError,
    read_adapters,
    read_run,
    write_run,
)
from localist_core.experiments.expert_runs import lineage_deltas, route_text, run_recruitment
from localist_core.experiments.experts import (
    AdapterTrainer,
    Expert,
    RecruitConfig,
    attempt,
    code_rows,
)
from localist_core.experiments.train import make_model, train
from localist_core.model.config import ModelConfig, TrainConfig, preset
from localist_core.model.tokenizer import Tokenizer

V = 80                      # 78 words, <eos>, <unk>
WORDS = [f"w{i}" for i in range(V - 2)] + ["<eos>", "<unk>"]
HALF = (V - 2) // 2


def source_doc(source: int, n: int, g: torch.Generator) -> torch.Tensor:
    """Source 0 draws words w0…w38 uniformly, source 1 w39…w77."""
    return torch.randint(0, HALF, (n,), generator=g) + source * HALF


@pytest.fixture(scope="module")
def two_sources():
    """A tiny base trained briefly on words of both sources shuffled together (so it codes
    every word alike and cannot tell the sources apart), a stream of 40 documents alternating
    between the sources and 10 held-out ones, as hidden states."""
    g = torch.Generator().manual_seed(0)
    tok = Tokenizer(WORDS)
    mix = torch.randint(0, 2 * HALF, (20_000,), generator=g)
    corpus = Corpus(tok, mix, mix[:2000], mix[:2000], "two sources")
    mcfg = ModelConfig(vocab_size=V, **preset("tiny").model)
    tcfg = TrainConfig(**{**preset("tiny").train, "protocol": "penalty", "penalty_form": "none",
                          "max_steps": 60, "threads": 1})
    model = train(mcfg, tcfg, corpus, progress=False).model.eval()
    stream = [Document(f"{'AB'[i % 2]}{i}", source_doc(i % 2, 160, g)) for i in range(40)]
    held = [Document(f"{'AB'[i % 2]}{i}", source_doc(i % 2, 160, g)) for i in range(10)]
    return (model, tok, document_states(model, stream, tok.eos_id),
            document_states(model, held, tok.eos_id))


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the CLI's default (a session fixture may have trained with two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CFG = dict(rank=4, check_every=10, min_docs=4, steps=40, batch_tokens=128, lr=1e-2)


# -- documents and hidden states -------------------------------------------------------------------

def test_articles_start_at_single_equals_headings_and_cover_the_split(tiny_corpus):
    lines = [" ", " = Alpha = ", " ", " a b c . ", " = = Part = = ", " d e . ", " = Beta = ",
             " f . ", " = = = Deep = = = ", " g h "]
    tok = tiny_corpus.tokenizer
    docs = articles(lines, tok, min_tokens=1)
    assert [d.title for d in docs] == ["Alpha", "Beta"]
    assert torch.equal(torch.cat([d.tokens for d in docs]), encode_lines(tok, lines))
    assert [len(d.tokens) for d in docs] == [21, 18]
    assert [len(d.tokens) for d in articles(lines, tok, min_tokens=1, max_tokens=3)] == [3, 3]
    assert [d.title for d in articles(lines, tok, min_tokens=20)] == ["Alpha"]


@pytest.mark.parametrize("n", [1, 31, 32, 33, 47, 48, 100])
def test_windows_keep_every_token_once_with_half_a_window_of_context(n):
    n_ctx, stride = 32, 16
    count, kept = windows(n, n_ctx, stride)
    win, pos = kept // n_ctx, kept % n_ctx
    assert torch.equal(win * stride + pos, torch.arange(n))          # each token once, in order
    assert bool((pos[win > 0] >= n_ctx - stride).all())               # ≥ 16 tokens of context
    assert int(win.max()) == count - 1


def test_states_are_the_base_reading_each_document_on_its_own(tiny_model, tiny_corpus):
    eos = tiny_corpus.tokenizer.eos_id
    doc = Document("d", tiny_corpus.train[:80].clone())
    cache = document_states(tiny_model, [Document("s", doc.tokens[:20]), doc], eos)
    inputs = torch.cat([torch.tensor([eos]), doc.tokens[:-1]])
    with torch.no_grad():
        short = tiny_model(inputs[None, :20]).hidden[0]
        late = tiny_model(inputs[None, 48:80]).hidden[0]             # the window at 3·16
    near = dict(atol=1e-2, rtol=1e-3)                                 # stored in fp16
    assert torch.allclose(cache.hidden[:20].float(), short, **near)
    assert torch.allclose(cache.hidden[20:40].float(), short, **near)
    assert torch.allclose(cache.hidden[20 + 64:20 + 80].float(), late[16:], **near)
    assert torch.equal(cache.targets[20:], doc.tokens)


# -- experts ---------------------------------------------------------------------------------------

def test_a_child_with_B_zero_codes_exactly_like_its_parent(two_sources):
    model, _, stream, _ = two_sources
    d = stream.hidden.shape[1]
    g = torch.Generator().manual_seed(1)
    parent = Expert(1, 0, torch.randn(d, 4, generator=g) @ torch.randn(4, d, generator=g) / d)
    child = AdapterTrainer(model, stream, parent.delta, RecruitConfig(**CFG), g)
    assert bool(child.A.detach().any()) and not bool(child.B.detach().any())
    rows = torch.arange(500)
    both = code_rows(model, stream, rows, torch.stack([parent.delta, child.delta]))
    assert torch.equal(both[0], both[1])
    assert not torch.equal(both[0], code_rows(model, stream, rows, torch.zeros(1, d, d))[0])


@pytest.mark.parametrize("cut", [5, 40, 100])
def test_experts_pass_the_leak_test_a_token_is_coded_from_the_words_before_it(two_sources, cut):
    """Replacing every token after ``cut`` moves the bits of the tokens up to ``cut`` by no more
    than 1e-5 under the base or an expert, across the windows a long document is read in
    (n_ctx = 32 here)."""
    model, tok, _, _ = two_sources
    g = torch.Generator().manual_seed(2)
    doc = source_doc(0, 150, g)
    changed = doc.clone()
    changed[cut + 1:] = torch.randint(0, V - 2, (150 - cut - 1,), generator=g)
    d = model.cfg.d_model
    deltas = torch.stack([torch.zeros(d, d), torch.randn(d, d, generator=g) / d])
    states = [document_states(model, [Document("d", t)], tok.eos_id) for t in (doc, changed)]
    rows = torch.arange(cut + 1)
    bits = [code_rows(model, s, rows, deltas) for s in states]
    assert torch.allclose(bits[0], bits[1], atol=1e-5, rtol=0)
    # The states after cut + 1 read changed words, so a cache that mixed positions would fail.
    assert not torch.allclose(states[0].hidden[cut + 2:].float(),
                              states[1].hidden[cut + 2:].float(), atol=1e-3)


def test_savings_are_scored_on_halves_the_child_never_trained_on(two_sources):
    model, _, stream, _ = two_sources
    cfg = RecruitConfig(**CFG)
    docs = torch.arange(20)
    routed = code_rows(model, stream, torch.arange(int(stream.offsets[20])),
                       torch.zeros(1, 32, 32))[0]
    a = attempt(model, stream, Expert(0, None, torch.zeros(32, 32)), docs, routed, cfg,
                torch.Generator().manual_seed(0))
    assert len(a.docs) > 0 and a.steps == cfg.rounds * cfg.steps
    trained, scored = set(a.trained_rows.tolist()), set(a.scored_rows.tolist())
    assert trained and scored and not trained & scored
    assert trained <= set(stream.rows(docs, "first").tolist())
    assert scored == set(stream.rows(a.docs, "second").tolist())
    again = routed[a.scored_rows].double().sum() - a.scored_bits.double().sum()
    assert a.savings_bits == pytest.approx(float(again))


def test_two_sources_grow_two_experts_at_a_sensible_cost_and_none_at_a_prohibitive_one(
        two_sources):
    model, tok, stream, held = two_sources
    memo: dict = {}
    cheap, tensors = run_recruitment(model, tok.words, stream, held,
                                     RecruitConfig(**CFG, bits_per_param=1.0), memo=memo)
    dear, _ = run_recruitment(model, tok.words, stream, held,
                              RecruitConfig(**CFG, bits_per_param=64.0), memo=memo)
    assert len(cheap["experts"]) == 3 and len(dear["experts"]) == 1
    assert not any(a["recruited"] for a in dear["attempts"]) and dear["attempts"]
    source = {}
    for e in cheap["experts"][1:]:
        kinds = {t[0] for t in e["titles"]}
        assert len(kinds) == 1 and len(e["titles"]) >= 15               # one source each
        kind = source.setdefault(kinds.pop(), e["id"]) and next(iter({t[0] for t in e["titles"]}))
        assert e["savings_bits"] > e["cost_bits"] == 2 * 32 * 4 * 1.0
        words = {int(w["word"][1:]) for w in e["top_words"]}             # its source's half
        assert words and all((w >= HALF) == (kind == "B") for w in words)
    assert sorted(source) == ["A", "B"]
    assert cheap["heldout"]["routes"] == [source[t[0]] for t in cheap["heldout"]["titles"]]
    assert set(dear["heldout"]["routes"]) == {0}
    h = cheap["heldout"]
    assert h["pool"]["bits_per_token"] < h["single"]["bits_per_token"] - 0.2
    assert dear["heldout"]["pool"] == dear["heldout"]["base"]
    # The stored adapters rebuild the pool: routing a source's text picks its expert.
    pairs = [None] + [(tensors[f"expert.{i}.A"], tensors[f"expert.{i}.B"]) for i in (1, 2)]
    deltas = lineage_deltas([e["parent"] for e in cheap["experts"]], pairs, 32)
    text = " ".join(f"w{i}" for i in source_doc(1, 100, torch.Generator().manual_seed(9)))
    assert route_text(model, tok, text, deltas)["expert"] == source["B"]
    assert route_text(model, tok, "  ", deltas) is None
    alone = lineage_deltas([None], [None], 32)                          # the base alone
    assert route_text(model, tok, text, alone)["expert"] == 0


@pytest.mark.parametrize("bad", [dict(rank=0), dict(rank=65), dict(steps=0),
                                 dict(bits_per_param=0.0), dict(bits_per_param=float("nan")),
                                 dict(lr=2.0), dict(min_docs=1), dict(max_experts=1),
                                 dict(seed=-1), dict(rank=True)])
def test_recruit_config_refuses_bad_values(bad):
    with pytest.raises(ValueError):
        RecruitConfig(**bad)


# -- files and the command line -------------------------------------------------------------------

SETTINGS = {"rank": 4, "d_model": 32, "base": {"name": "b", "sha256": "0"}}


def test_run_files_round_trip_and_a_tampered_file_is_refused(two_sources, tmp_path):
    model, tok, stream, held = two_sources
    run, tensors = run_recruitment(model, tok.words, stream, held,
                                   RecruitConfig(**CFG, bits_per_param=64.0, max_experts=2))
    path = write_run(tmp_path, {**run, "settings": SETTINGS}, tensors)
    back = read_run(path)
    assert back["experts"] == json.loads(json.dumps(run["experts"]))
    st = path.with_suffix(".safetensors")
    assert set(read_adapters(st, back)) == {"single.A", "single.B"}
    from safetensors.torch import save_file
    save_file({"single.A": torch.zeros(32, 5), "single.B": torch.zeros(5, 32)}, str(st))
    with pytest.raises(ExpertsError, match="do not match"):
        read_adapters(st, back)
    path.write_text(json.dumps({**back, "experts": [{"id": 3}]}))
    with pytest.raises(ExpertsError):
        read_run(path)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_model_cfg, tiny_corpus):
    """An untrained tiny checkpoint: the CLI's checks and files do not need a trained base."""
    path = tmp_path_factory.mktemp("experts-base") / "tiny"
    save_checkpoint(path, make_model(tiny_model_cfg, tiny_corpus, seed=0), tiny_corpus.tokenizer)
    return path


def _cli(ckpt, out, data, *extra):
    return main(["experts", "--checkpoint", str(ckpt), "--out", str(out), "--data-dir",
                 str(data), "--seeds", "1,2", "--bits-per-param", "0.5,64", "--rank", "2",
                 "--steps", "4", "--max-docs", "12", "--check-every", "4",
                 "--max-heldout", "6", "--max-doc-tokens", "96", *extra])


def test_cli_writes_runs_and_a_summary_and_reruns_idempotently(tiny_ckpt, tiny_data_dir,
                                                                tmp_path, capsys):
    out = tmp_path / "experts"
    assert _cli(tiny_ckpt, out, tiny_data_dir) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["run-s1-b0.5.json", "run-s1-b0.5.safetensors", "run-s1-b64.json",
                     "run-s1-b64.safetensors", "run-s2-b0.5.json", "run-s2-b0.5.safetensors",
                     "run-s2-b64.json", "run-s2-b64.safetensors", "summary.json"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    assert [r["bits_per_param"] for r in summary["by_bits_per_param"]] == [0.5, 64]
    assert summary["by_bits_per_param"][0]["recruited"]["n"] == 2
    assert "computed 4" in capsys.readouterr().out
    assert _cli(tiny_ckpt, out, tiny_data_dir) == 0
    assert "nothing to compute" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _cli(tiny_ckpt, out, tiny_data_dir, "--rank", "3") == 2          # other settings
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "rank" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("case,message", [
    ("foreign", "did not write"), ("no-checkpoint", "no such checkpoint"),
    ("file-out", "is a file"), ("too-many", "at most 64")])
def test_cli_refuses_bad_input_in_one_line(tiny_ckpt, tiny_data_dir, tmp_path, capsys, case,
                                           message):
    out, ckpt, extra = tmp_path / "out", tiny_ckpt, []
    if case == "foreign":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "no-checkpoint":
        ckpt = tmp_path / "nowhere"
    elif case == "file-out":
        out.write_text("x")
    else:
        extra = ["--seeds", ",".join(str(i) for i in range(33))]
    assert _cli(ckpt, out, tiny_data_dir, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert case != "foreign" or [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("flag,value", [("--rank", "0"), ("--steps", "20000"),
                                        ("--bits-per-param", "0"), ("--max-docs", "1"),
                                        ("--bits-per-param", "nan"), ("--seeds", "-1")])
def test_cli_numbers_are_bounded(flag, value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["experts", "--checkpoint", "x", "--out", "y", flag, value])
    assert exc.value.code == 2 and flag in capsys.readouterr().err


def test_stream_valid_recruits_on_validation_articles_and_holds_out_test(tiny_ckpt,
                                                                        tiny_data_dir, tmp_path):
    """--stream valid: the base never saw the stream or the held-out articles."""
    from localist_core.experiments.data import load_lines
    from localist_core.experiments.documents import articles
    from localist_core.model.checkpoint import load_model
    out = tmp_path / "experts"
    assert _cli(tiny_ckpt, out, tiny_data_dir, "--stream", "valid", "--seeds", "1",
                "--bits-per-param", "64") == 0
    run = json.loads((out / "run-s1-b64.json").read_text())
    assert run["settings"]["stream"] == "valid"
    tok = load_model(tiny_ckpt)[1]
    lines, _ = load_lines(tiny_data_dir)
    titles = {s: [d.title for d in articles(lines[s], tok, max_tokens=96)]
              for s in ("train", "valid", "test")}
    streamed = [t for e in run["experts"] for t in e["titles"]]
    assert streamed and set(streamed) <= set(titles["valid"][:12])
    assert run["stream"]["docs"] == min(12, len(titles["valid"]))
    assert run["heldout"]["titles"] == titles["test"][:6] != titles["valid"][:6]
