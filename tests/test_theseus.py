"""kexue.theseus: module replacing on tiny random BERT, DistilBERT, GPT-2 and Llama models.

The reference for every check is the model rebuilt by hand: the original layers in the order the
draw selects (a successor that has not trained yet is a copy of its source layer), run by the
unwrapped class.  Dropout is 0 so the outputs are deterministic and compared exactly.
"""

import copy
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from kexue import theseus  # noqa: E402

transformers.logging.set_verbosity_error()
VOCAB = 40
N_LAYERS = 4


def _configs():
    return {
        "bert": (transformers.BertForSequenceClassification,
                 transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=N_LAYERS,
                                         num_attention_heads=2, intermediate_size=24, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0, num_labels=3)),
        "distilbert": (transformers.DistilBertForSequenceClassification,
                       transformers.DistilBertConfig(vocab_size=VOCAB, dim=16, n_layers=N_LAYERS, n_heads=2,
                                                     hidden_dim=24, dropout=0.0, attention_dropout=0.0,
                                                     seq_classif_dropout=0.0)),
        "gpt2": (transformers.GPT2LMHeadModel,
                 transformers.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=N_LAYERS, n_head=2, resid_pdrop=0.0,
                                         embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)),
        "llama": (transformers.LlamaForCausalLM,
                  transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=N_LAYERS,
                                           num_attention_heads=2, num_key_value_heads=1, intermediate_size=24)),
    }


ARCHS = list(_configs())


def make(arch, seed=0):
    cls, cfg = _configs()[arch]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(cfg).eval()


def batch(arch, b=3, t=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, -2:] = 0  # a padded row
    if arch in ("gpt2", "llama"):
        return {"input_ids": ids, "attention_mask": mask, "labels": ids}
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (b,), generator=g)}


def layer_list(model):
    path, layers = theseus.find_layers(model)
    return path, layers


def rebuilt(original, order):
    """``original`` with its layer list replaced by copies of the layers ``order`` (indices)."""
    model = copy.deepcopy(original)
    path, layers = layer_list(model)
    parent_path, _, attr = path.rpartition(".")
    new = nn.ModuleList([copy.deepcopy(layers[i]) for i in order])
    setattr(model.get_submodule(parent_path), attr, new)
    model.config.num_hidden_layers = len(order)
    return model


def composite_order(choices, sources, ratio):
    order = []
    for g, use in enumerate(choices):
        order += [sources[g]] if use else list(range(g * ratio, (g + 1) * ratio))
    return order


def run(model, inputs, train):
    model.train(train)
    return model(**inputs, use_cache=False) if "use_cache" in _accepts(model) else model(**inputs)


def _accepts(model):
    import inspect

    return set(inspect.signature(model.forward).parameters)


def assert_same(out, ref):
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
    torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=0)


# --- outputs: p = 0, p = 1 and the draws in between -----------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_p0_is_the_predecessor(arch):
    original = make(arch)
    wrapped = theseus.wrap(copy.deepcopy(original), ratio=2, scheduler=theseus.ConstantReplacing(0.0))
    inputs = batch(arch)
    for _ in range(3):  # several draws: all of them keep the predecessor
        assert_same(run(wrapped, inputs, train=True), run(original, inputs, train=True))
        assert not wrapped.last_choices.any()


@pytest.mark.parametrize("init", ["first", "every_nth"])
@pytest.mark.parametrize("arch", ARCHS)
def test_p1_and_eval_are_the_successor(arch, init):
    original = make(arch)
    wrapped = theseus.wrap(copy.deepcopy(original), ratio=2, init=init, scheduler=theseus.ConstantReplacing(1.0))
    sources = [0, 1] if init == "first" else [1, 3]
    assert wrapped.successor_sources == sources
    reference = rebuilt(original, sources)
    inputs = batch(arch)
    assert_same(run(wrapped, inputs, train=True), run(reference, inputs, train=False))
    assert wrapped.last_choices.all()
    # eval mode runs the successor alone whatever p is
    wrapped.scheduler.rate = 0.0
    assert_same(run(wrapped, inputs, train=False), run(reference, inputs, train=False))
    assert_same(run(wrapped.successor(), inputs, train=False), run(reference, inputs, train=False))


@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_forward_follows_the_seeded_draw(arch):
    original = make(arch)
    wrapped = theseus.wrap(copy.deepcopy(original), ratio=2, scheduler=theseus.ConstantReplacing(0.5), seed=7)
    ran = []
    for g, group in enumerate(wrapped.groups):
        group.successor.register_forward_hook(lambda *a, g=g: ran.append(("s", g)))
        for j, layer in enumerate(group.predecessors):
            layer.register_forward_hook(lambda *a, g=g, j=j: ran.append(("p", g, j)))
    inputs = batch(arch)
    seen = set()
    for step in range(12):
        expected = wrapped.choices(step)
        torch.manual_seed(1000 + step)  # the global random state has no say in the draw
        ran.clear()
        out = run(wrapped, inputs, train=True)
        assert torch.equal(wrapped.last_choices, expected)
        want = []
        for g, use in enumerate(expected.tolist()):
            want += [("s", g)] if use else [("p", g, 0), ("p", g, 1)]
        assert ran == want
        ref = run(rebuilt(original, composite_order(expected.tolist(), [0, 1], 2)), inputs, train=False)
        assert_same(out, ref)
        seen.add(tuple(expected.tolist()))
    assert wrapped.draw_step == 12
    assert len(seen) == 4  # 12 draws at p = 0.5 over 2 groups visit every pattern (seed 7)


def test_draws_depend_on_seed_and_step_only():
    a = theseus.wrap(make("bert"), ratio=1, scheduler=theseus.ConstantReplacing(0.3), seed=3)
    b = theseus.wrap(make("bert", seed=5), ratio=1, scheduler=theseus.ConstantReplacing(0.3), seed=3)
    c = theseus.wrap(make("bert"), ratio=1, scheduler=theseus.ConstantReplacing(0.3), seed=4)
    draws = torch.stack([a.choices(t) for t in range(4000)])
    assert torch.equal(draws, torch.stack([b.choices(t) for t in range(4000)]))
    assert not torch.equal(draws, torch.stack([c.choices(t) for t in range(4000)]))
    # Bernoulli(0.3) per module: 16 000 draws, the mean within 4.5 standard errors (false alarm < 1e-5)
    se = (0.3 * 0.7 / draws.numel()) ** 0.5
    assert abs(draws.float().mean().item() - 0.3) < 4.5 * se
    # modules and steps are independent: the correlation of neighbours is ~0
    x = draws.float() - draws.float().mean()
    assert abs((x[:, 0] * x[:, 1]).mean().item()) / 0.21 < 4.5 / 4000 ** 0.5
    assert abs((x[1:, 0] * x[:-1, 0]).mean().item()) / 0.21 < 4.5 / 4000 ** 0.5


# --- gradients: frozen parts get none ------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_frozen_parameters_get_no_grad(arch):
    wrapped = theseus.wrap(make(arch), ratio=2, scheduler=theseus.ConstantReplacing(0.5), seed=7)
    wrapped.train()
    step = next(t for t in range(50) if wrapped.choices(t).tolist() == [True, False])
    wrapped.draw_step = step
    wrapped(**batch(arch)).loss.backward()
    with_grad = {n for n, p in wrapped.named_parameters() if p.grad is not None}
    successor_0 = {n for n, _ in wrapped.groups[0].successor.named_parameters(prefix="x")}
    assert with_grad and all(".0.successor." in n for n in with_grad)
    assert len(with_grad) == len(successor_0)
    for n, p in wrapped.named_parameters():
        assert p.requires_grad == (".successor." in n), n


def test_all_predecessor_step_backpropagates_to_nothing():
    wrapped = theseus.wrap(make("bert"), ratio=2, scheduler=theseus.ConstantReplacing(0.0))
    wrapped.train()
    loss = wrapped(**batch("bert")).loss
    assert loss.requires_grad  # a training loop's backward() must not fail on such a step
    loss.backward()
    assert all(p.grad is None for p in wrapped.parameters())


def test_trainable_options():
    wrapped = theseus.wrap(make("bert"), ratio=2, train_head=True)
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert any("classifier" in n for n in trainable) and any("pooler" in n for n in trainable)
    assert not any("embeddings" in n for n in trainable)
    wrapped.set_trainable(embeddings=True)
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert any("word_embeddings" in n for n in trainable) and not any("classifier" in n for n in trainable)
    assert not any("predecessors" in n for n in trainable)
    # GPT-2 ties lm_head to wte: the shared weight trains with either part
    gpt = theseus.wrap(make("gpt2"), ratio=2, train_head=True)
    assert gpt.model.lm_head.weight is gpt.model.transformer.wte.weight and gpt.model.lm_head.weight.requires_grad


def test_ddp_keep_in_graph_gives_zero_grads_and_same_output():
    inputs = batch("bert")
    plain = theseus.wrap(make("bert"), ratio=2, scheduler=theseus.ConstantReplacing(0.5), seed=7)
    kept = theseus.wrap(make("bert"), ratio=2, scheduler=theseus.ConstantReplacing(0.5), seed=7,
                        ddp_keep_in_graph=True)
    step = next(t for t in range(50) if plain.choices(t).tolist() == [True, False])
    plain.draw_step = kept.draw_step = step
    a, b = run(plain, inputs, True), run(kept, inputs, True)
    assert_same(a, b)
    b.loss.backward()
    for p in kept.groups[1].successor.parameters():
        assert p.grad is not None and not p.grad.any()
    for p in kept.groups[0].successor.parameters():
        assert p.grad is not None


# --- schedulers ----------------------------------------------------------------------------------

def test_scheduler_values():
    const = theseus.ConstantReplacing(0.5, replacing_steps=3)
    assert [const.value(t) for t in range(5)] == [0.5, 0.5, 0.5, 1.0, 1.0]
    assert [const.p] + [const.step() for _ in range(4)] == [0.5, 0.5, 0.5, 1.0, 1.0]
    assert theseus.ConstantReplacing(0.25).value(10**9) == 0.25
    lin = theseus.LinearReplacing(base=0.3, slope=0.0006)
    assert lin.value(0) == 0.3
    assert lin.value(1000) == pytest.approx(0.9)
    assert lin.value(1166) < 1.0 and lin.value(1167) == 1.0 and lin.value(10**6) == 1.0
    assert lin.steps_to_one == 1167
    lin.step()
    lin.step()
    state = lin.state_dict()
    fresh = theseus.LinearReplacing(base=0.3, slope=0.0006)
    fresh.load_state_dict(state)
    assert fresh.p == pytest.approx(0.3012)


def test_wrapped_reads_the_scheduler_each_forward():
    sched = theseus.LinearReplacing(base=0.0, slope=0.5)  # p = 0, 0.5, 1
    wrapped = theseus.wrap(make("bert"), ratio=1, scheduler=sched)
    wrapped.train()
    inputs = batch("bert")
    wrapped(**inputs)
    assert not wrapped.last_choices.any()
    sched.step()
    sched.step()
    wrapped(**inputs)
    assert wrapped.last_choices.all()


def test_trainer_callback_steps_the_scheduler():
    wrapped = theseus.wrap(make("bert"), ratio=2, scheduler=theseus.ConstantReplacing(0.5, replacing_steps=2))
    cb = theseus.TheseusCallback(wrapped)
    assert isinstance(cb, transformers.TrainerCallback)
    for _ in range(2):
        cb.on_step_end(None, None, None)
    assert wrapped.scheduler.step_count == 2 and wrapped.scheduler.p == 1.0
    with pytest.raises(TypeError, match="scheduler"):
        theseus.TheseusCallback(object())


def test_forward_signature_and_state_dict_round_trip():
    import inspect

    model = make("bert")
    want = list(inspect.signature(type(model).forward).parameters)[1:]
    wrapped = theseus.wrap(model, ratio=2, scheduler=theseus.LinearReplacing(0.3, 0.1), seed=9)
    assert list(inspect.signature(wrapped.forward).parameters) == want
    wrapped.train()
    for _ in range(3):
        wrapped(**batch("bert"))
        wrapped.scheduler.step()
    other = theseus.wrap(make("bert"), ratio=2, scheduler=theseus.LinearReplacing(0.3, 0.1), seed=0)
    other.load_state_dict(wrapped.state_dict())
    assert (other.draw_step, other.seed, other.scheduler.step_count) == (3, 9, 3)
    assert torch.equal(other.choices(other.draw_step), wrapped.choices(wrapped.draw_step))


# --- export --------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_exported_successor_round_trips(arch, tmp_path):
    wrapped = theseus.wrap(make(arch), ratio=2, scheduler=theseus.ConstantReplacing(0.5))
    # train one step so that the successor differs from its source layers
    opt = torch.optim.SGD(wrapped.trainable_parameters(), lr=0.5)
    wrapped.scheduler.rate = 1.0
    run(wrapped, batch(arch), True).loss.backward()
    opt.step()
    small = wrapped.successor()
    assert type(small) is type(wrapped.model)
    assert small.config.num_hidden_layers == 2 and len(layer_list(small)[1]) == 2
    assert all(p.requires_grad for p in small.parameters())
    assert not any(isinstance(m, theseus.TheseusGroup) for m in small.modules())
    inputs = batch(arch)
    assert_same(run(small, inputs, False), run(wrapped, inputs, False))
    small.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "kexue" not in json.dumps(config).lower() and "theseus" not in json.dumps(config).lower()
    loaded = type(small).from_pretrained(tmp_path).eval()
    assert_same(run(loaded, inputs, False), run(small, inputs, False))
    # the exported model shares no storage with the wrapper
    with torch.no_grad():
        for p in small.parameters():
            p.add_(1.0)
    assert_same(run(wrapped, inputs, False), run(loaded, inputs, False))


def test_exported_successor_loads_without_kexue(tmp_path):
    wrapped = theseus.wrap(make("bert"), ratio=2)
    small = wrapped.successor()
    small.save_pretrained(tmp_path)
    inputs = batch("bert")
    torch.save({k: v for k, v in inputs.items() if k != "labels"}, tmp_path / "inputs.pt")
    torch.save(run(small, inputs, False).logits, tmp_path / "logits.pt")
    code = ("import sys; sys.modules['kexue'] = None\n"  # any import of kexue would now fail
            "import torch, transformers\n"
            f"m = transformers.AutoModelForSequenceClassification.from_pretrained({str(tmp_path)!r}).eval()\n"
            f"x = torch.load({str(tmp_path / 'inputs.pt')!r})\n"
            f"assert torch.equal(m(**x).logits, torch.load({str(tmp_path / 'logits.pt')!r}))\n"
            "print(type(m).__name__, m.config.num_hidden_layers)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["BertForSequenceClassification", "2"]


def test_generation_with_the_successor_uses_the_cache():
    wrapped = theseus.wrap(make("llama"), ratio=2)
    small = wrapped.successor()
    ids = batch("llama")["input_ids"][:1]
    with_cache = small.generate(ids, max_new_tokens=4, do_sample=False, use_cache=True)
    without = small.generate(ids, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, without)
    wrapped.eval()
    assert torch.equal(wrapped.model.generate(ids, max_new_tokens=4, do_sample=False), with_cache)


# --- bad input -----------------------------------------------------------------------------------

class _Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.stack = nn.ModuleList([nn.Linear(4, 4) for _ in range(4)])
        self.not_a_list = nn.Linear(4, 4)

    def forward(self, x):
        for layer in self.stack:
            x = layer(x)
        return x


BAD_WRAP = [
    (lambda: theseus.wrap(make("bert"), ratio=3), ValueError, "ratio=3 does not divide the 4 layers"),
    (lambda: theseus.wrap(make("bert"), num_layers=3), ValueError, "num_layers=3 does not divide"),
    (lambda: theseus.wrap(make("bert"), ratio=0), ValueError, "ratio must be an int >= 1"),
    (lambda: theseus.wrap(make("bert"), num_layers=0), ValueError, "num_layers must be an int >= 1"),
    (lambda: theseus.wrap(_Odd()), ValueError, "layers_attr="),
    (lambda: theseus.wrap(_Odd(), layers_attr="not_a_list"), ValueError, "layers_attr='not_a_list' names Linear"),
    (lambda: theseus.wrap(_Odd(), layers_attr="missing.path"), ValueError, "names nothing"),
    (lambda: theseus.wrap(make("bert"), init="last"), ValueError, "init must be"),
    (lambda: theseus.wrap(make("bert"), seed=-1), ValueError, "seed must be"),
    (lambda: theseus.wrap(make("bert"), scheduler=0.5), TypeError, "scheduler must be"),
    (lambda: theseus.wrap("bert"), TypeError, "model must be a torch.nn.Module"),
    (lambda: theseus.wrap(theseus.wrap(make("bert"))), ValueError, "already wrapped"),
    (lambda: theseus.ConstantReplacing(1.5), ValueError, "p must be a probability in [0, 1]"),
    (lambda: theseus.ConstantReplacing(-0.1), ValueError, "p must be a probability"),
    (lambda: theseus.ConstantReplacing(float("nan")), ValueError, "p must be a probability"),
    (lambda: theseus.ConstantReplacing(0.5, replacing_steps=0), ValueError, "skip the replacing phase"),
    (lambda: theseus.LinearReplacing(base=1.2), ValueError, "base must be a probability"),
    (lambda: theseus.LinearReplacing(slope=-1e-3), ValueError, "slope must be"),
    (lambda: theseus.LinearReplacing(slope=float("inf")), ValueError, "slope must be"),
    (lambda: theseus.LinearReplacing().value(-1), ValueError, "step must be >= 0"),
]


@pytest.mark.parametrize("call, error, message", BAD_WRAP, ids=[m for _, _, m in BAD_WRAP])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        call()


def test_layers_attr_on_an_unknown_architecture():
    model = _Odd()
    x = torch.randn(2, 4)
    want = model(x)
    wrapped = theseus.wrap(model, ratio=2, layers_attr="stack", scheduler=theseus.ConstantReplacing(0.0))
    wrapped.train()
    torch.testing.assert_close(wrapped(x), want, rtol=0, atol=0)


def test_cache_in_a_mixed_step_is_refused():
    wrapped = theseus.wrap(make("gpt2"), ratio=2, scheduler=theseus.ConstantReplacing(0.5), seed=7)
    wrapped.train()
    wrapped.draw_step = next(t for t in range(50) if wrapped.choices(t).tolist() == [True, False])
    with pytest.raises(ValueError, match="KV cache"):
        wrapped(input_ids=batch("gpt2")["input_ids"], cache=transformers.DynamicCache())


def test_finds_roberta_and_bare_base_models():
    cfg = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=N_LAYERS, num_attention_heads=2,
               intermediate_size=24)
    assert theseus.find_layers(transformers.RobertaForSequenceClassification(
        transformers.RobertaConfig(**cfg)))[0] == "roberta.encoder.layer"
    assert theseus.find_layers(transformers.BertModel(transformers.BertConfig(**cfg)))[0] == "encoder.layer"
    assert theseus.find_layers(transformers.GPT2Model(
        transformers.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2)))[0] == "h"
    assert theseus.find_layers(transformers.LlamaModel(
        transformers.LlamaConfig(**cfg, num_key_value_heads=1)))[0] == "layers"


def test_docstring_example_runs():
    import textwrap

    doc = theseus.wrap.__doc__
    code = textwrap.dedent(doc[doc.index("Example::") + len("Example::"):])
    scope = {}
    exec(compile(code, "wrap-docstring", "exec"), scope)  # noqa: S102
    small = scope["small"]
    assert isinstance(small, transformers.BertForSequenceClassification) and small.config.num_hidden_layers == 2
