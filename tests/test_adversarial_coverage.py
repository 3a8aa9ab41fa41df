"""Guard: every public callable of kexue has rows in the adversarial suite (issue 20, item 4).

Walks the public namespace (``__all__`` of kexue and of each public subpackage) and looks each
callable up in ``COVERED``: the row-id prefixes of tests/adversarial_cases.py that exercise it
(or the other adversarial test that does), or an exemption with its reason.  A new public
function without rows fails here until someone writes its hostile inputs.
"""

from __future__ import annotations

import importlib
import inspect

import pytest
from adversarial_cases import all_bad, all_good

PUBLIC_MODULES = ("kexue", "kexue.nn", "kexue.decoding", "kexue.attribution", "kexue.theseus", "kexue.vae",
                  "kexue.datasets", "kexue.probe", "kexue.text_classifier")

# qualified name -> row-id prefixes in adversarial_cases.py, or "exempt: why", or "file: where"
COVERED: dict[str, tuple[str, ...] | str] = {
    "kexue.adjust_logits": ("adjust/",),
    "kexue.build_info": "exempt: takes no arguments",
    "kexue.class_prior": ("class-prior/",),
    "kexue.cross_entropy": ("ce/",),
    "kexue.linear_attention": ("la/",),
    "kexue.linear_attention_step": ("step/",),
    "kexue.linear_cross_entropy": ("lce/",),
    "kexue.sample": ("sample/",),
    "kexue.nn.CrossEntropyLoss": ("nn.ce/",),
    "kexue.nn.LinearAttention": ("nn.la/", "hf/"),
    "kexue.nn.SelfTerminatingHead": ("head/",),
    "kexue.decoding.ConsistentTopKLogitsWarper": ("warper-k/",),
    "kexue.decoding.ConsistentTopPLogitsWarper": ("warper-p/",),
    "kexue.decoding.GenerateOutput": "exempt: a result container (NamedTuple) built by generate",
    "kexue.decoding.generate": ("generate/",),
    "kexue.decoding.non_termination_ratio": ("non-termination/",),
    "kexue.decoding.sample": ("sample/",),
    "kexue.decoding.sample_reference": "file: test_adversarial_raw_ops.py (the raw op's rows; same signature)",
    "kexue.decoding.sampling_probs": ("sampling-probs/",),
    "kexue.decoding.sampling_probs_reference": "file: test_adversarial_raw_ops.py (the raw op's rows)",
    "kexue.attribution.IGResult": "exempt: a result container built by integrated_gradients",
    "kexue.attribution.TokenAttribution": "exempt: a result container built by token_attributions",
    "kexue.attribution.integrated_gradients": ("ig/",),
    "kexue.attribution.integrated_gradients_reference": ("ig-reference/",),
    "kexue.attribution.render": "file: test_attribution_text.py (needs a TokenAttribution and a writable path)",
    "kexue.attribution.token_attributions": "file: test_attribution_text.py (needs a model; its bad-input tests)",
    "kexue.theseus.ConstantReplacing": ("theseus/constant-",),
    "kexue.theseus.LinearReplacing": ("theseus/linear-",),
    "kexue.theseus.ReplacingScheduler": "exempt: the abstract base of the schedulers",
    "kexue.theseus.TheseusCallback": "file: test_theseus.py (a transformers Trainer callback)",
    "kexue.theseus.TheseusGroup": "exempt: built by wrap",
    "kexue.theseus.TheseusModel": "exempt: built by wrap",
    "kexue.theseus.export_successor": "file: test_theseus.py",
    "kexue.theseus.find_layers": "file: test_theseus.py",
    "kexue.theseus.wrap": ("theseus/wrap-",),
    "kexue.vae.AE": "exempt: built by mlp_ae/conv_ae",
    "kexue.vae.VAE": "exempt: built by mlp_vae/conv_vae",
    "kexue.vae.VAEOutput": "exempt: a result container",
    "kexue.vae.active_units": ("vae/active-units",),
    "kexue.vae.conv_ae": "file: test_vae.py (shares conv_networks' checks)",
    "kexue.vae.conv_networks": "file: test_vae.py",
    "kexue.vae.conv_vae": "file: test_vae.py",
    "kexue.vae.elbo": ("vae/elbo",),
    "kexue.vae.fit": ("vae/fit",),
    "kexue.vae.gaussian_kl": ("vae/kl",),
    "kexue.vae.iw_log_likelihood": ("vae/iw",),
    "kexue.vae.latent_activity": ("vae/latent-activity",),
    "kexue.vae.mlp_ae": "file: test_vae.py (shares mlp_networks' checks)",
    "kexue.vae.mlp_networks": "file: test_vae.py",
    "kexue.vae.mlp_vae": ("vae/mlp",),
    "kexue.vae.reconstruction_log_likelihood": ("vae/rll",),
    "kexue.vae.reparameterize": "file: test_vae.py",
    "kexue.datasets.TextSplit": "exempt: a result container",
    "kexue.datasets.cache_dir": "exempt: takes no arguments",
    "kexue.datasets.austen_novels": "file: test_austen.py (test_bad_unit: an unknown unit names `unit`)",
    "kexue.datasets.load_smollm2": "exempt: study loader; its one option, dtype, goes to transformers",
    "kexue.empty_cpu_cache": "exempt: takes no arguments",
    "kexue.datasets.fashion_mnist": "file: test_datasets.py (a missing data_dir is a clear error)",
    "kexue.datasets.load_textgenrnn": "file: test_textgenrnn.py",
    "kexue.datasets.mnist_5k": "exempt: takes no arguments",
    "kexue.datasets.movie_snippets": "exempt: takes no arguments",
    "kexue.probe.Sentence": "exempt: a result container built by read_conllu",
    "kexue.probe.chu_liu_edmonds": ("cle/",),
    "kexue.probe.count_sequences": ("count-sequences/",),
    "kexue.probe.default_model": "exempt: loads the bundled model (test_adversarial.py model cases)",
    "kexue.probe.eisner": ("eisner/",),
    "kexue.probe.evaluate_dependency": ("evaluate/",),
    "kexue.probe.evaluate_segmentation": "file: test_probe_segment_eval.py (needs a model)",
    "kexue.probe.impact_matrices": "file: test_adversarial.py (MODEL_BAD, impact/)",
    "kexue.probe.impact_matrix": "file: test_adversarial.py (MODEL_BAD, impact/)",
    "kexue.probe.impact_matrix_published_scheme": "file: test_probe_engine.py (needs a model)",
    "kexue.probe.impact_matrix_reference": "file: test_probe_engine.py (needs a model)",
    "kexue.probe.left_branching": ("right-branching/",),
    "kexue.probe.left_chain": ("left-chain/",),
    "kexue.probe.load_model": "file: test_adversarial.py (the CLI's --model rows)",
    "kexue.probe.mart": ("mart/",),
    "kexue.probe.pair_impacts": "file: test_probe_engine.py (needs a model)",
    "kexue.probe.parse_dependency": ("parse/",),
    "kexue.probe.pud_path": "exempt: takes no arguments",
    "kexue.probe.read_conllu": ("conllu/",),
    "kexue.probe.right_branching": ("right-branching/",),
    "kexue.probe.right_chain": ("right-chain/",),
    "kexue.probe.segment": "file: test_adversarial.py (MODEL_BAD, segment/)",
    "kexue.probe.segmentation_prf": "file: test_probe_segment_eval.py",
    "kexue.probe.tree_brackets": "file: test_probe_parsers.py",
    "kexue.probe.uas": ("uas/",),
    "kexue.probe.uuas": ("uuas/",),
    "kexue.text_classifier.accuracy": "file: test_text_classifier.py (needs a model)",
    "kexue.text_classifier.encode": "file: test_text_classifier.py (needs a tokenizer)",
    "kexue.text_classifier.finetune": "file: test_text_classifier.py (needs a model)",
    "kexue.text_classifier.minilm_classifier": "file: test_text_classifier.py (needs the bundled model)",
    "kexue.text_classifier.minilm_path": "exempt: takes no arguments",
    "kexue.text_classifier.predict_logits": "file: test_text_classifier.py (needs a model)",
    "kexue.text_classifier.sentiment_cache_path": "exempt: takes no arguments",
    "kexue.text_classifier.sentiment_classifier": "file: test_text_classifier.py (trains or loads a model)",
}


def public_callables() -> list[str]:
    names = []
    for m in PUBLIC_MODULES:
        mod = importlib.import_module(m)
        exported = getattr(mod, "__all__", None)
        if exported is None:  # (kexue.text_classifier: its own public functions)
            exported = [n for n, o in vars(mod).items() if not n.startswith("_") and callable(o)
                        and getattr(o, "__module__", "") == mod.__name__]
        for n in exported:
            obj = getattr(mod, n)
            if callable(obj) and not inspect.ismodule(obj):
                names.append(f"{m}.{n}")
    return sorted(set(names))


def test_every_public_callable_is_in_the_coverage_map():
    missing = [n for n in public_callables() if n not in COVERED]
    assert not missing, f"public callables with no adversarial rows (add rows or an exemption): {missing}"


@pytest.mark.parametrize("name", [n for n, v in COVERED.items() if isinstance(v, tuple)])
def test_covered_callables_have_rows(name):
    ids = [c.id for c in all_bad() + all_good()]
    for prefix in COVERED[name]:
        assert any(i.startswith(prefix) for i in ids), f"{name}: no row starts with {prefix!r}"


def test_coverage_summary():
    """The closing note's figure: how many public callables have table rows, file rows, exemptions (-s)."""
    kinds = {"rows": 0, "file": 0, "exempt": 0}
    for name in public_callables():
        v = COVERED[name]
        kinds["rows" if isinstance(v, tuple) else v.split(":")[0]] += 1
    print(f"\npublic callables: {sum(kinds.values())}: {kinds}")
