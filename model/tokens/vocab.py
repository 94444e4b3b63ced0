"""The vocabulary: special tokens, then time tokens (if any), then category tokens, then code tokens; one
token per code.

Layout (ids): 0..6 specials in BART order, then the time tokens of a model that learned time (the gap
tokens, then the stay tokens: one per bin of model/tokens/time_bins.py), then `n_categories` category
tokens (sorted), then `n_codes` code tokens (sorted). Without time there are no time tokens and every
id is what it was before time existed. Codes are never split into pieces, so a token is a diagnosis and the model's
output layer is a distribution over diagnoses.

Categories are those of the kept codes only, so every category token owns at least one code token:
hierarchical generation can always expand a category it has chosen.

Tokens are the in-memory code strings of model/codes.py, so ICD-9-CM ("4019") and ICD-10-CM
("icd10:I10") codes and categories never share a token. The JSON names the systems it holds only
when that is not ICD-9-CM alone, so an ICD-9 vocabulary is written byte for byte as before and an
older vocab.json (no field: ICD-9-CM) still loads. Likewise "time" ({"edges", "gaps", "stays"}) is
written only for a model that learned time.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from promptehr.model.codes import category_of, systems_in
from promptehr.model.tokens import time_bins

BOS, PAD, EOS, UNK, VISIT, END_VISIT, MASK = 0, 1, 2, 3, 4, 5, 6
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<v>", "</v>", "<mask>")
VERSION = 1


@dataclass(frozen=True)
class TimeTokens:
    """Which time tokens a vocabulary has: gap tokens (days between visit starts), stay tokens (days
    from a visit's start to its end), both over the bins `edges`."""

    gaps: bool = True
    stays: bool = True
    edges: tuple[int, ...] = time_bins.EDGES

    def __post_init__(self):
        object.__setattr__(self, "edges", time_bins.check_edges(self.edges))
        if not (self.gaps or self.stays):
            raise ValueError("time tokens need gaps, stays or both (no time at all is time=None)")

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1

    def to_dict(self) -> dict:
        return {"gaps": self.gaps, "stays": self.stays, "edges": list(self.edges)}

    @classmethod
    def of(cls, patients) -> tuple["TimeTokens | None", str]:
        """The time tokens training data supports, and why: gaps when every patient has visit days,
        stays when every patient has stays too; None (no time) otherwise."""
        patients = list(patients)
        no_days = sum(p.visit_days is None for p in patients)
        if not patients or no_days:
            return None, (f"{no_days} of {len(patients)} training patients have no visit dates" if patients
                          else "no training patients")
        no_stays = sum(p.los_days is None for p in patients)
        if no_stays:
            return cls(gaps=True, stays=False), f"{no_stays} of {len(patients)} training patients have no visit end dates: gaps only"
        return cls(), "every training patient has visit dates and stays"


def time_token_counts(patients, time: TimeTokens | None) -> list[int] | None:
    """Occurrences of each time token (gap bins, then stay bins) in the training records."""
    if time is None:
        return None
    n = time.n_bins
    gaps = np.zeros(n if time.gaps else 0, dtype=np.int64)
    stays = np.zeros(n if time.stays else 0, dtype=np.int64)
    for p in patients:
        if time.gaps and len(p.visit_days) > 1:
            np.add.at(gaps, time_bins.bin_of(np.diff(p.visit_days), time.edges), 1)
        if time.stays:
            np.add.at(stays, time_bins.bin_of(p.los_days, time.edges), 1)
    return np.concatenate([gaps, stays]).tolist()


class Vocabulary:
    """Token <-> id maps plus the code -> category structure and training code counts.

    Attributes (all plain data):
      categories, codes      sorted strings; token id = category_offset + i / code_offset + i
      code_category          np.ndarray (n_codes,): category TOKEN id of code index i
      category_codes         dict: category token id -> np.ndarray of its code TOKEN ids (sorted)
      code_counts            np.ndarray (n_codes,): visits containing the code in the training data
    """

    def __init__(self, categories: Sequence[str], codes: Sequence[str], code_counts: Sequence[int] | None = None,
                 min_count: int = 1, time: TimeTokens | None = None, time_counts: Sequence[int] | None = None):
        self.categories = list(categories)
        self.codes = list(codes)
        self.min_count = int(min_count)
        self.time = time
        n_bins = time.n_bins if time is not None else 0
        self.n_gaps = n_bins if time is not None and time.gaps else 0
        self.n_stays = n_bins if time is not None and time.stays else 0
        self.gap_offset = len(SPECIALS)
        self.stay_offset = self.gap_offset + self.n_gaps
        self.category_offset = self.stay_offset + self.n_stays
        self.code_offset = self.category_offset + len(self.categories)
        edges = time.edges if time is not None else ()
        time_tokens = ([time_bins.label("gap", b, edges) for b in range(self.n_gaps)]
                       + [time_bins.label("stay", b, edges) for b in range(self.n_stays)])
        self.tokens = list(SPECIALS) + time_tokens + self.categories + self.codes
        # training records with each time token (gaps, then stays): a bin no record had is never generated
        self.time_counts = np.asarray(time_counts if time_counts is not None else np.ones(len(time_tokens)), dtype=np.int64)
        # A code and its category can be the same string ("585" is a code and a category): keep two maps.
        self._category_id = {c: self.category_offset + i for i, c in enumerate(self.categories)}
        self._code_id = {c: self.code_offset + i for i, c in enumerate(self.codes)}
        self._special_id = {t: i for i, t in enumerate(SPECIALS)}
        self.code_counts = np.asarray(code_counts if code_counts is not None else np.ones(len(self.codes)),
                                      dtype=np.int64)
        self.code_category = np.array([self._category_id[category_of(c)] for c in self.codes], dtype=np.int64)
        self.category_codes = {
            k: self.code_offset + np.flatnonzero(self.code_category == k) for k in range(self.category_offset, self.code_offset)
        }

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, patients: Iterable, min_count: int = 1, time: TimeTokens | None = None) -> Vocabulary:
        """From training patients: codes seen in at least `min_count` visits; their categories; the
        time tokens `time` (TimeTokens.of(patients) says which the data supports)."""
        counts = Counter(code for p in patients for visit in p.visits for code in set(visit))
        codes = sorted(c for c, n in counts.items() if n >= min_count)
        categories = sorted({category_of(c) for c in codes})
        return cls(categories, codes, [counts[c] for c in codes], min_count=min_count, time=time,
                   time_counts=time_token_counts(patients, time))

    # ---- lookups ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    @property
    def n_codes(self) -> int:
        return len(self.codes)

    @property
    def has_time(self) -> bool:
        return self.time is not None

    def gap_token(self, b: int) -> int:
        return self.gap_offset + int(b)

    def stay_token(self, b: int) -> int:
        return self.stay_offset + int(b)

    def is_gap(self, token_id: int) -> bool:
        return self.gap_offset <= token_id < self.stay_offset

    def is_stay(self, token_id: int) -> bool:
        return self.stay_offset <= token_id < self.category_offset

    @property
    def code_systems(self) -> tuple[str, ...]:
        """The code systems of the vocabulary's codes ("icd9", "icd10"), in model.codes.SYSTEMS order;
        ("icd9",) for a vocabulary without codes, as for an older vocab.json."""
        return systems_in(self.codes) or ("icd9",)

    def id_of(self, token: str) -> int:
        """Id of a special token, a code, or (when not a code) a category; `<unk>` otherwise."""
        if token in self._special_id:
            return self._special_id[token]
        if token in self._code_id:
            return self._code_id[token]
        return self._category_id.get(token, UNK)

    def code_id(self, code: str) -> int | None:
        return self._code_id.get(code)

    def category_id(self, category: str) -> int | None:
        return self._category_id.get(category)

    def token_of(self, token_id: int) -> str:
        return self.tokens[token_id]

    def is_code(self, token_id: int) -> bool:
        return self.code_offset <= token_id < len(self.tokens)

    def is_category(self, token_id: int) -> bool:
        return self.category_offset <= token_id < self.code_offset

    def category_token_of(self, code_token_id: int) -> int:
        return int(self.code_category[code_token_id - self.code_offset])

    def code_token_for(self, code: str) -> tuple[int, int]:
        """(category token, code token) for a code; rare/unknown codes give (category or <unk>, <unk>)."""
        cid = self._code_id.get(code)
        if cid is not None:
            return int(self.code_category[cid - self.code_offset]), cid
        return self._category_id.get(category_of(code), UNK), UNK

    # ---- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"version": VERSION, "specials": list(SPECIALS), "min_count": self.min_count,
             "categories": self.categories, "codes": self.codes, "code_counts": self.code_counts.tolist()}
        if self.code_systems != ("icd9",):  # optional: absent means ICD-9-CM only (see the module docstring)
            d["code_systems"] = list(self.code_systems)
        if self.time is not None:  # optional: absent means no time tokens
            d["time"] = {**self.time.to_dict(), "counts": self.time_counts.tolist()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        if d.get("version") != VERSION or tuple(d.get("specials", ())) != SPECIALS:
            raise ValueError(f"unsupported vocabulary version {d.get('version')!r} or special tokens")
        t = dict(d["time"]) if d.get("time") is not None else None
        counts = t.pop("counts", None) if t is not None else None
        time = TimeTokens(**t) if t is not None else None
        vocab = cls(d["categories"], d["codes"], d["code_counts"], min_count=d.get("min_count", 1), time=time,
                    time_counts=counts)
        if tuple(d.get("code_systems", ("icd9",))) != vocab.code_systems:
            raise ValueError(f"vocabulary lists code systems {d.get('code_systems', ['icd9'])} but its codes are {list(vocab.code_systems)}")
        return vocab

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.to_dict() == other.to_dict()
