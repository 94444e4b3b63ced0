"""Visits <-> token ids.

flat:          <s> <v> c1 c2 </v> <v> c3 </v> </s>
hierarchical:  <s> <v> K(c1) c1 K(c2) c2 </v> <v> K(c3) c3 </v> </s>     (K = category token)
with time:     <s> <v> K(c1) c1 K(c2) c2 S </v> G <v> K(c3) c3 S </v> </s>

A model that learned time (Vocabulary.time) has a gap token G before every visit after the first (the
bin of the days since the previous visit's start) and a stay token S closing each visit (the bin of
its length of stay); model/tokens/time_bins.py is the table. The stay comes after the codes, so a
visit's codes are chosen before its length (and forced codes, which open the first visit, need no
time before them).

In hierarchical mode every code is preceded by its category, so the decoder first predicts the category
skeleton and then each code conditioned on demographics, its category and the visit so far; at
generation time a code step is masked to the codes of the category just chosen.

Codes outside the vocabulary (rarer than min_count, or unseen): flat mode writes their category token
(`<unk>` if the category is unknown too); hierarchical mode writes (category or `<unk>`, `<unk>`).
Decoding turns a lone category token back into the category string and drops `<unk>`, so the round trip
is exact for in-vocabulary codes. Sequences longer than `max_length` lose their oldest visits first (the
oldest visit kept loses its gap: it is the record's first now); a single visit that alone is too long
keeps its first codes.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from promptehr.model.tokens import time_bins
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
    def encode_visit(self, visit: Sequence[str], stay_bin: int | None = None) -> list[int]:
        """One visit -> `<v> ... [S] </v>` (S when the vocabulary has stay tokens: `stay_bin` is then required)."""
        out = [VISIT]
        for code in visit:
            category, code_id = self.vocab.code_token_for(code)
            if self.hierarchical:
                out += [category, code_id]
            else:
                out.append(code_id if code_id != UNK else category)
        if self.vocab.n_stays:
            out.append(self.vocab.stay_token(stay_bin))
        out.append(END_VISIT)
        return out

    def encode(self, visits: Sequence[Sequence[str]], max_length: int | None = None,
               visit_days: Sequence[int] | None = None, los_days: Sequence[int] | None = None) -> list[int]:
        """A record -> `<s> visits </s>`, at most `max_length` tokens (oldest visits dropped first). A
        vocabulary with time needs the record's times (ValueError without them); one without ignores them."""
        v = self.vocab
        if v.n_gaps and visit_days is None or v.n_stays and los_days is None:
            raise ValueError("this model learned time: the record needs visit_days" + (" and los_days" if v.n_stays else ""))
        stays = time_bins.bin_of(los_days, v.time.edges).tolist() if v.n_stays else [None] * len(visits)
        gaps = time_bins.bin_of(np.diff(visit_days), v.time.edges).tolist() if v.n_gaps and len(visits) > 1 else []
        encoded = [self.encode_visit(x, s) for x, s in zip(visits, stays)]
        lead = [[]] + [[v.gap_token(g)] for g in gaps] if v.n_gaps else [[] for _ in encoded]  # each visit's gap token
        tail = 1 + (1 if v.n_stays else 0)  # </v> and the stay token: what a cut visit keeps at its end
        if max_length is not None:
            budget = max_length - 2  # <s> and </s>
            kept, used = [], 0
            for k in range(len(encoded) - 1, -1, -1):  # newest first; the first visit kept has no gap
                ids = encoded[k]
                if used + len(ids) > budget:
                    if not kept:  # the newest visit alone is too long: keep its first codes
                        n_codes = max(0, (budget - 1 - tail) // self.tokens_per_code)
                        kept.append(ids[: 1 + n_codes * self.tokens_per_code] + ids[-tail:])
                    break
                kept.append(ids)
                used += len(ids)
                if lead[k]:
                    if used + len(lead[k]) > budget:  # its gap does not fit: this visit is the first kept
                        break
                    used += len(lead[k])
                    kept[-1] = lead[k] + ids
            kept = kept[::-1]
            if kept and kept[0][0] != VISIT:  # the oldest visit kept is the record's first now: no gap
                kept[0] = kept[0][1:]
            encoded = kept
        else:
            encoded = [g + ids for g, ids in zip(lead, encoded)]
        return [BOS] + [t for ids in encoded for t in ids] + [EOS]

    def encode_patient(self, p, max_length: int | None = None) -> list[int]:
        """encode() of a Patient's visits, with its times."""
        return self.encode(p.visits, max_length, p.visit_days, p.los_days)

    # ---- decode -------------------------------------------------------------------------------
    def decode(self, ids: Sequence[int]) -> list[list[str]]:
        """Token ids -> visits of code strings (decode_record without the times)."""
        return self.decode_record(ids)[0]

    def decode_record(self, ids: Sequence[int]) -> tuple[list[list[str]], list[int | None], list[int | None]]:
        """Token ids -> (visits, gap bin of each visit (None for the first, or where none was given),
        stay bin of each visit (None where none was given)). Tolerant: stops at `</s>`, ignores stray
        specials, closes an unterminated last visit, drops empty visits (and their times)."""
        vocab = self.vocab
        visits: list[list[str]] = []
        gaps: list[int | None] = []
        stays: list[int | None] = []
        current: list[str] | None = None
        pending_category: str | None = None  # hierarchical: a category waiting for its code
        gap = stay = None

        def close():
            if current:
                visits.append(_dedupe(current))
                gaps.append(gap if visits[1:] else None)
                stays.append(stay)

        for t in ids:
            t = int(t)
            if t == EOS:
                break
            if t == VISIT:
                current, pending_category, stay = [], None, None
            elif t == END_VISIT:
                close()
                current, pending_category, gap = None, None, None
            elif vocab.is_gap(t):
                gap = t - vocab.gap_offset
            elif current is None:
                continue
            elif vocab.is_stay(t):
                stay = t - vocab.stay_offset
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
        close()
        return visits, gaps, stays


def _dedupe(visit: list[str]) -> list[str]:
    return list(dict.fromkeys(visit))
