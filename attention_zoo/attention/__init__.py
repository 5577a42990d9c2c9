"""attention_zoo.attention: every score, combine and kernel behind one interface."""

from attention_zoo.attention.combine import COMBINES, Concat, Gate, Residual, make_combine
from attention_zoo.attention.kernels import KERNELS, chunked, dense, fused, get_kernel
from attention_zoo.attention.layers import Attention, MultiHeadAttention
from attention_zoo.attention.masks import (causal_mask, combine_masks, padding_mask,
                                           query_key_mask)
from attention_zoo.attention.positional import (LearnedPositional, alibi_bias, apply_rotary,
                                                sinusoidal)
from attention_zoo.attention.scores import SCORES, make_score
from attention_zoo.attention.squeeze_excite import SqueezeExcite
