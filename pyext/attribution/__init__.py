"""Integrated gradients (Sundararajan et al. 2017): Captum-exact, adaptive, memory-bounded.

- :func:`integrated_gradients`: any differentiable forward, Captum's arguments and rules, plus
  ``n_steps="auto"`` (nested Clenshaw–Curtis rules refined per example until completeness holds) and
  ``max_memory``; ``method="gradient" | "gradient_x_input"`` for comparison;
- :func:`token_attributions`: any Hugging Face sequence classifier or causal LM, integrated over
  a layer's output (the embeddings by default) with the work below it done once per example;
- :func:`render`: tokens coloured by score (PNG and HTML);
- :func:`integrated_gradients_reference`: the plain float64 definition.
"""

from .api import IGResult, integrated_gradients
from .quadrature import METHODS
from .reference import integrated_gradients_reference
from .render import render
from .text import TokenAttribution, token_attributions

__all__ = ["IGResult", "METHODS", "TokenAttribution", "integrated_gradients", "integrated_gradients_reference",
           "render", "token_attributions"]
