"""kexue.theseus: BERT-of-Theseus progressive module replacing for any Hugging Face model.

* :func:`wrap` turns a fine-tuned model into one that trains its k-layer successor inside it;
* :class:`ConstantReplacing`, :class:`LinearReplacing`: the replacement-rate schedules;
* :class:`TheseusCallback`: steps the schedule inside a ``transformers.Trainer``;
* ``wrapped.successor()`` / :func:`export_successor`: the successor as a plain model.

Plain-loop example::

    from kexue import theseus
    wrapped = theseus.wrap(model, ratio=2, scheduler=theseus.ConstantReplacing(0.5, replacing_steps=500))
    opt = torch.optim.AdamW(wrapped.trainable_parameters(), lr=5e-5)
    for batch in loader:
        wrapped(**batch).loss.backward()
        opt.step(); opt.zero_grad(); wrapped.scheduler.step()
    wrapped.successor().save_pretrained("small/")
"""

from .export import export_successor
from .schedulers import ConstantReplacing, LinearReplacing, ReplacingScheduler
from .wrap import LAYER_PATHS, TheseusGroup, TheseusModel, find_layers, wrap

__all__ = ["LAYER_PATHS", "ConstantReplacing", "LinearReplacing", "ReplacingScheduler", "TheseusCallback",
           "TheseusGroup", "TheseusModel", "export_successor", "find_layers", "wrap"]


def __getattr__(name):  # the callback needs transformers: imported on first use
    if name == "TheseusCallback":
        from .callback import TheseusCallback

        return TheseusCallback
    raise AttributeError(f"module 'kexue.theseus' has no attribute {name!r}")
