"""The special token ids every token vocabulary of the zoo starts with.

Models (masks, decoding) and data (vocabularies, batches) both read these; this module imports
nothing, so that `attention_zoo.models` never needs `attention_zoo.data`.
"""

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ('<pad>', '<bos>', '<eos>', '<unk>')  # the tokens of ids 0..3
