"""Linear attention: public API, reference and kernels' glue."""

from .api import linear_attention, linear_attention_readout, linear_attention_state, linear_attention_step
from .feature_maps import FEATURE_MAPS, apply_feature_map, feature_dim
from .reference import linear_attention_chunked, linear_attention_quadratic

__all__ = [
    "FEATURE_MAPS",
    "apply_feature_map",
    "feature_dim",
    "linear_attention",
    "linear_attention_chunked",
    "linear_attention_quadratic",
    "linear_attention_readout",
    "linear_attention_state",
    "linear_attention_step",
]
