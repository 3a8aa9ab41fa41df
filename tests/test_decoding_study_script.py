"""bench/decoding_study.py --quick runs (the full table is in bench/RESULTS.md)."""


import pytest

from helpers import load_bench_script

pytest.importorskip("h5py")


def test_decoding_study_quick():
    mod = load_bench_script("decoding_study")
    try:
        rows = mod.main(["--quick"])
    except RuntimeError as exc:  # pragma: no cover - only without access to PyPI
        pytest.skip(f"PyPI not reachable: {exc}")
    assert len(rows) == len(mod.STRATEGIES)
    assert all(0.0 <= r["r_L"] <= 1.0 for r in rows)


def test_austen_quick_runs_on_synthetic_sentences():
    mod = load_bench_script("decoding_study")
    rows = mod.main(["--model", "austen", "--quick"])
    decode = [r for r in rows if r["kind"] == "decode"]
    models = [r for r in rows if r["kind"] == "model"]
    assert len(decode) == len(mod.STRATEGIES) + len(mod.ST_STRATEGIES)  # the baseline, then ST 1e-2
    assert [r["model"] for r in models] == ["baseline", "ST 1e-2"]
    assert all(0.0 <= r["r_L"] <= 1.0 and r["test_ppl"] > 1.0 for r in decode)
    assert all(0.0 <= r["loops"] <= r["r_L"] + 1e-12 for r in decode)
    for r in models:  # the NLL split is exact: termination factor · word factor = the test perplexity
        assert r["diag_term_factor"] * r["diag_word_factor"] == pytest.approx(r["test_ppl"], rel=1e-4)
        assert r["diag_ppl"] == pytest.approx(r["test_ppl"], rel=1e-4)
    st = next(r for r in models if r["model"] == "ST 1e-2")  # ST's p_eos never falls: its envelope is itself
    assert st["diag_monotone_term_factor"] == pytest.approx(st["diag_term_factor"], rel=1e-4)


def test_austen_quick_model_subset_and_training_seeds():
    mod = load_bench_script("decoding_study")
    rows = mod.main(["--model", "austen", "--quick", "--models", "ST 1e-2", "--train-seeds", "0", "1",
                     "--decode", "deterministic"])
    assert [(r["model"], r["train_seed"]) for r in rows if r["kind"] == "model"] == [("ST 1e-2", 0), ("ST 1e-2", 1)]
    assert [r["name"] for r in rows if r["kind"] == "decode"] == [n for n, _ in mod.ST_STRATEGIES] * 2


def test_loop_detector():
    import torch

    mod = load_bench_script("decoding_study")
    g = torch.Generator().manual_seed(0)
    assert mod.loop_period(torch.tensor([5] * 300)) == 1
    assert mod.loop_period(torch.tensor([1, 2, 3, 4, 5, 6, 7] * 40)) == 7
    assert mod.loop_period(torch.randint(0, 1000, (400,), generator=g)) == 0  # a "long answer"
    assert mod.loop_period(torch.tensor([1, 2] * 50)) == 0  # shorter than the window: not judged
    noisy = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10] * 30)
    noisy[-150::37] = 99  # a few deviations stay a loop
    assert mod.loop_period(noisy) == 10
    long_period = torch.cat([torch.randint(0, 1000, (150,), generator=g)] * 3)  # period 150 > 100
    assert mod.loop_period(long_period) == 0


def test_repetitive_catches_near_repeats_that_have_no_period():
    import torch

    mod = load_bench_script("decoding_study")
    g = torch.Generator().manual_seed(0)
    subjects, smiled, again, dot = torch.tensor([1, 2, 6, 7]), 3, 4, 5  # "She smiled again. He smiled again. ..."
    drift = torch.stack([subjects[torch.randint(0, 4, (80,), generator=g)],
                         *(torch.full((80,), t) for t in (smiled, again, dot))], 1).reshape(-1)
    assert mod.loop_period(drift) == 0 and mod.distinct_tokens(drift) == 7
    assert mod.is_repetitive(drift)
    prose = torch.randint(0, 5000, (400,), generator=g)  # ~196 distinct of 200, like natural text's 104-150
    assert not mod.is_repetitive(prose)
    assert mod.is_repetitive(torch.tensor([7, 8, 9] * 100))  # a strict loop is repetitive too
    assert not mod.is_repetitive(torch.tensor([7, 8, 9] * 10))  # too short to judge


def test_fisher_and_mcnemar_exact():
    mod = load_bench_script("decoding_study")
    assert mod.fisher_exact(7, 10, 3, 10) == pytest.approx(0.1789, abs=1e-4)  # R: fisher.test
    assert mod.fisher_exact(8, 10, 3, 10) == pytest.approx(0.0698, abs=1e-4)
    assert mod.fisher_exact(5, 10, 5, 10) == pytest.approx(1.0)
    assert mod.fisher_exact(20, 20, 0, 20) < 1e-10
    assert mod.mcnemar_exact(0, 0) == 1.0
    assert mod.mcnemar_exact(6, 0) == pytest.approx(2 / 64)
    assert mod.mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    scipy_stats = pytest.importorskip("scipy.stats")
    for a, b in [(3, 12), (17, 9), (0, 5), (30, 30)]:
        want = scipy_stats.fisher_exact([[a, 30 - a], [b, 30 - b]]).pvalue
        assert mod.fisher_exact(a, 30, b, 30) == pytest.approx(want, rel=1e-9)
        assert mod.mcnemar_exact(a, b) == pytest.approx(scipy_stats.binomtest(a, a + b).pvalue if a + b else 1.0)


@pytest.mark.parametrize("mode", [None, "st", "nmst"])
def test_lstm_step_fn_agrees_with_the_whole_sequence(mode):
    import torch

    mod = load_bench_script("decoding_study")
    torch.manual_seed(0)
    model = mod.WordLSTM(23, 8, mode, 1e-2, 0.0).eval()
    ids = torch.randint(0, 23, (3, 9))
    with torch.no_grad():
        full, _, _ = model.log_probs(ids)
    step = mod.lstm_step_fn(model)
    logits, state = step(ids[:, :4], None)
    got = [logits]
    for t in range(4, 9):
        logits, state = step(ids[:, t: t + 1], state)
        got.append(logits)
    torch.testing.assert_close(torch.stack(got, 1), full[:, 3:], rtol=1e-5, atol=1e-5)


def _tiny_llama():
    import torch

    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                                   initializer_range=0.5)  # large weights: the next token depends on the context
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("strategy,kw", [("greedy", {}), ("beam", {"beam_size": 3}),
                                         ("sample", {"top_k": 4, "keep": 0})])
def test_smollm2_step_fn_kv_cache_matches_recomputation(strategy, kw):
    """The KV-cache step function (with beam reordering and finished rows leaving the batch) decodes the
    same tokens as recomputing the whole sequence at every step."""
    import torch

    from kexue.decoding import generate

    mod = load_bench_script("decoding_study")
    model = _tiny_llama()

    @torch.no_grad()
    def recompute(ids, state):
        seq = ids if state is None else torch.cat([state, ids], 1)
        return model(input_ids=seq).logits[:, -1].float(), seq

    prompts = torch.randint(1, 40, (5, 6))
    runs = []
    for fn, reorder in ((mod.smollm2_step_fn(model), mod.reorder_cache), (recompute, None)):
        extra = {"reorder_state": reorder} if reorder is not None else {}
        g = {"generator": torch.Generator().manual_seed(0)} if strategy == "sample" else {}
        runs.append(generate(fn, prompts, strategy=strategy, eos_id=0, max_len=25, **g, **extra, **kw))
    assert torch.equal(runs[0].sequences, runs[1].sequences)
    assert torch.equal(runs[0].terminated, runs[1].terminated)


def test_summarise_merges_seed_runs_like_one_run(tmp_path, capsys):
    """Runs saved per seed (--save) and merged by --summarise give the table of one run over both seeds."""
    import torch

    mod = load_bench_script("decoding_study")

    def step_fn(ids, state):  # eos (id 0) 3%, token 1 63%: plain nucleus 0.2 keeps only token 1
        logits = torch.zeros(ids.shape[0], 6)
        logits[:, 0], logits[:, 1] = -1.0, 2.0
        return logits, state

    prompts = [torch.tensor([1, 2]) for _ in range(6)]
    strategies = [(n, kw) for n, kw in mod.STRATEGIES if n in ("greedy", "nucleus 0.2", "consistent nucleus 0.2")]
    one = mod.rl_table(step_fn, prompts, 0, strategies, 250, [0, 1])
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"s{seed}.pt"
        torch.save({"rows": mod.rl_table(step_fn, prompts, 0, strategies, 250, [seed])}, path)
        paths.append(str(path))
    merged = mod.main(["--summarise", *paths])
    assert [r["strategy"] for r in merged] == [r["strategy"] for r in one]
    for a, b in zip(merged, one, strict=True):
        assert a["n_seeds"] == b["n_seeds"] and a["unfinished"] == b["unfinished"]
        assert a["r_L"] == pytest.approx(b["r_L"]) and a["r_L_std"] == pytest.approx(b["r_L_std"])
        assert a["loops"] == pytest.approx(b["loops"])
        assert a["repetitive"] == b["repetitive"] and a["repetitive_share"] == pytest.approx(b["repetitive_share"])
    assert one[0]["r_L"] == 1.0 and one[0]["loops"] == 1.0  # greedy repeats token 1: a period-1 loop
    assert one[1]["r_L"] == 1.0 and one[1]["loops"] == 1.0  # so does plain nucleus 0.2
    assert one[2]["r_L"] == 0.0  # consistent nucleus keeps eos (3% a step): every row ends within 250
    assert "nucleus 0.2 -> consistent" in capsys.readouterr().out
