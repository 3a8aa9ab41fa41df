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
    assert len(rows) == len(mod.STRATEGIES) + len(mod.ST_STRATEGIES)  # the baseline, then ST 1e-2
    assert all(0.0 <= r["r_L"] <= 1.0 and r["test_ppl"] > 1.0 for r in rows)


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
