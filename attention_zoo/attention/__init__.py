"""attention_zoo.attention: every score, combine and kernel behind one interface."""

from attention_zoo.attention.capture import captured
from attention_zoo.attention.combine import COMBINES, Gate, Residual, make_combine
from attention_zoo.attention.kernels import KERNELS, chunked, dense, fused, get_kernel
from attention_zoo.attention.layers import Attention, MultiHeadAttention
from attention_zoo.attention.masks import causal_mask, combine_masks, padding_mask
from attention_zoo.attention.positional import (POSITIONS, LearnedPositions, RotaryPositions,
                                                SinusoidalPositions, apply_rotary, sinusoidal)
from attention_zoo.attention.scores import SCORES, make_score
from attention_zoo.attention.squeeze_excite import SqueezeExcite

__all__ = [
    'COMBINES', 'KERNELS', 'POSITIONS', 'SCORES', 'Attention', 'Gate',
    'LearnedPositions', 'MultiHeadAttention', 'Residual', 'RotaryPositions', 'SinusoidalPositions',
    'SqueezeExcite', 'apply_rotary', 'captured', 'causal_mask', 'chunked', 'combine_masks', 'dense',
    'fused', 'get_kernel', 'make_combine', 'make_score', 'padding_mask', 'sinusoidal',
]
