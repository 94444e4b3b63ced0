"""Where the token kinds sit in the vocabulary, as plain data: [specials | gaps | stays | categories | codes]
(no gap or stay tokens for a model without time: model/tokens/vocab.py).

One class for training (corruption, validation) and generation (constraints, sampler): both only need
the offsets, the special ids and which category each code token belongs to, not the Vocabulary itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from promptehr.model.tokens.vocab import BOS, END_VISIT, EOS, MASK, PAD, UNK, VISIT


@dataclass(frozen=True)
class TokenLayout:
    vocab_size: int
    bos: int
    pad: int
    eos: int
    unk: int
    visit_open: int
    visit_close: int
    mask: int
    category_offset: int
    code_offset: int
    code_category: np.ndarray  # (V,) int64: category token id of each code token, -1 for other tokens
    hierarchical: bool = True
    gap_offset: int = 0  # first gap token; n_gaps == 0: the model has no gap tokens
    n_gaps: int = 0
    stay_offset: int = 0  # first stay token; n_stays == 0: the model has no stay tokens
    n_stays: int = 0

    @classmethod
    def of(cls, vocab, hierarchical: bool = True) -> TokenLayout:
        """The layout of model/tokens/vocab.py's Vocabulary (<s>=0 <pad>=1 </s>=2 <unk>=3 <v>=4 </v>=5 <mask>=6)."""
        V = len(vocab)
        code_category = np.full(V, -1, dtype=np.int64)
        code_category[vocab.code_offset:] = np.asarray(vocab.code_category, dtype=np.int64)  # (n_codes,) category token ids
        return cls(vocab_size=V, bos=BOS, pad=PAD, eos=EOS, unk=UNK, visit_open=VISIT, visit_close=END_VISIT, mask=MASK,
                   category_offset=vocab.category_offset, code_offset=vocab.code_offset,
                   code_category=code_category, hierarchical=hierarchical,
                   gap_offset=vocab.gap_offset, n_gaps=vocab.n_gaps, stay_offset=vocab.stay_offset, n_stays=vocab.n_stays)

    @property
    def n_categories(self) -> int:
        return self.code_offset - self.category_offset

    @property
    def gaps(self) -> bool:
        return self.n_gaps > 0

    @property
    def stays(self) -> bool:
        return self.n_stays > 0

    def is_code(self) -> np.ndarray:
        return np.arange(self.vocab_size) >= self.code_offset
