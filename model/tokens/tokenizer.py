"""Visits <-> token ids.

flat:          <s> <v> c1 c2 </v> <v> c3 </v> </s>
hierarchical:  <s> <v> K(c1) c1 K(c2) c2 </v> <v> K(c3) c3 </v> </s>     (K = category token)

In hierarchical mode every code is preceded by its category, so the decoder first predicts the category
skeleton and then each code conditioned on demographics, its category and the visit so far; at
generation time a code step is masked to the codes of the category just chosen.

Codes outside the vocabulary (rarer than min_count, or unseen): flat mode writes their category token
(`<unk>` if the category is unknown too); hierarchical mode writes (category or `<unk>`, `<unk>`).
Decoding turns a lone category token back into the category string and drops `<unk>`, so the round trip
is exact for in-vocabulary codes. Sequences longer than `max_length` lose their oldest visits first; a
single visit that alone is too long keeps its first codes.
"""
from __future__ import annotations

from collections.abc import Sequence

from promptehr.model.tokens.vocab import BOS, END_VISIT, EOS, UNK, VISIT, Vocabulary

MODES = ("hierarchical", "flat")


class Tokenizer:
    def __init__(self, vocab: Vocabulary, mode: str = "hierarchical"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.vocab = vocab
        self.mode = mode
        self.hierarchical = mode == "hierarchical"
        self.tokens_per_code = 2 if self.hierarchical else 1

    # ---- encode -------------------------------------------------------------------------------
    def encode_visit(self, visit: Sequence[str]) -> list[int]:
        """One visit -> `<v> ... </v>`."""
        out = [VISIT]
        for code in visit:
            category, code_id = self.vocab.code_token_for(code)
            if self.hierarchical:
                out += [category, code_id]
            else:
                out.append(code_id if code_id != UNK else category)
        out.append(END_VISIT)
        return out

    def encode(self, visits: Sequence[Sequence[str]], max_length: int | None = None) -> list[int]:
        """A record -> `<s> visits </s>`, at most `max_length` tokens (oldest visits dropped first)."""
        encoded = [self.encode_visit(v) for v in visits]
        if max_length is not None:
            budget = max_length - 2  # <s> and </s>
            kept, used = [], 0
            for ids in reversed(encoded):  # newest first
                if used + len(ids) > budget:
                    if not kept:  # the newest visit alone is too long: keep its first codes
                        n_codes = max(0, (budget - 2) // self.tokens_per_code)
                        kept.append(ids[: 1 + n_codes * self.tokens_per_code] + [END_VISIT])
                    break
                kept.append(ids)
                used += len(ids)
            encoded = kept[::-1]
        return [BOS] + [t for ids in encoded for t in ids] + [EOS]

    # ---- decode -------------------------------------------------------------------------------
    def decode(self, ids: Sequence[int]) -> list[list[str]]:
        """Token ids -> visits of code strings. Tolerant: stops at `</s>`, ignores stray specials,
        closes an unterminated last visit, drops empty visits."""
        vocab = self.vocab
        visits: list[list[str]] = []
        current: list[str] | None = None
        pending_category: str | None = None  # hierarchical: a category waiting for its code
        for t in ids:
            t = int(t)
            if t == EOS:
                break
            if t == VISIT:
                current, pending_category = [], None
            elif t == END_VISIT:
                if current:
                    visits.append(current)
                current, pending_category = None, None
            elif current is None:
                continue
            elif vocab.is_code(t):
                current.append(vocab.token_of(t))
                pending_category = None
            elif vocab.is_category(t):
                if self.hierarchical:
                    # a category followed by <unk> (rare code) decodes to the category string
                    pending_category = vocab.token_of(t)
                else:
                    current.append(vocab.token_of(t))
            elif t == UNK and self.hierarchical and pending_category is not None:
                current.append(pending_category)
                pending_category = None
        if current:
            visits.append(current)
        return [_dedupe(v) for v in visits]


def _dedupe(visit: list[str]) -> list[str]:
    return list(dict.fromkeys(visit))
