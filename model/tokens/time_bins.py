"""The time table: the day bins of the gap and length-of-stay tokens, in one place.

A record with time is tokenized as (model/tokens/tokenizer.py)

    <s> <v> K c K c S </v> G <v> K c S </v> </s>

G, a gap token before every visit after the first: days from the previous visit's start to this
visit's start; S, a stay token at the end of each visit: days from the visit's start to its end
(0 = same day). Both kinds use the bins below: fine near zero, coarse later, because what matters
clinically (a readmission within 30 days, a one- or two-day stay) is short, and a long interval is
known to a month or a year at best.

| bins | days | width |
|---|---|---|
| 0-13 | 0, 1, ..., 13 | one day each (the first two weeks) |
| 14-24 | 14-20, 21-27, ..., 84-90 | one week each (to 3 months) |
| 25-45 | 91-121, 122-151, ..., 700-729 | one month each (round(30.4375 k) days, to 2 years) |
| 46-53 | 730-1095, ..., 3287-3651 | one year each (round(365.25 k), to 10 years) |
| 54 | 3652-7304 | the rest, to 20 years; a longer interval is counted in it (`clip_count`) |

Days are single bins for two weeks, not one, because most stays are a week or two long and fall off
steeply inside the second week: on DE-SynPUF 1-6 (34,373 stays) the uniform draw inside a 7-13 bin
alone put the stay distribution 0.043 (KS) from the real one even for a perfect model, three times
the holdout's own distance (0.015); with day bins to 13 the floor is 0.007 (gaps: 0.005 -> 0.004).

A bin becomes a day count at generation by a seeded uniform draw inside it (`days_in`), so a cohort's
days are as reproducible as its codes. The edges are saved with each model's vocabulary (vocab.json
"time"), so a model keeps decoding with the table it learned even if this one changes.
"""
from __future__ import annotations

import numpy as np

EDGES = (tuple(range(0, 14)) + tuple(range(14, 91, 7)) + tuple(round(30.4375 * k) for k in range(3, 24))
         + tuple(round(365.25 * k) for k in range(2, 11)) + (7305,))
N_BINS = len(EDGES) - 1  # 55


def check_edges(edges) -> tuple[int, ...]:
    e = tuple(int(x) for x in edges)
    if len(e) < 2 or e[0] != 0 or any(b <= a for a, b in zip(e, e[1:])):
        raise ValueError(f"time bin edges must start at 0 and increase, got {list(edges)[:8]}...")
    return e


def bin_of(days, edges=EDGES) -> np.ndarray:
    """Bin index of each day count (>= 0); counts past the last edge fall in the last bin."""
    d = np.asarray(days, dtype=np.int64)
    return np.clip(np.searchsorted(np.asarray(edges), d, side="right") - 1, 0, len(edges) - 2)


def clip_count(days, edges=EDGES) -> int:
    """How many day counts lie beyond the table (they are binned in the last bin)."""
    return int((np.asarray(days, dtype=np.int64) >= edges[-1]).sum())


def days_in(bins, u, edges=EDGES) -> np.ndarray:
    """A whole day count in each bin: lo + floor(u * (hi - lo)) for uniforms u in [0, 1)."""
    e = np.asarray(edges, dtype=np.int64)
    b = np.asarray(bins, dtype=np.int64)
    lo, width = e[b], e[b + 1] - e[b]
    return lo + np.minimum(np.floor(np.asarray(u, dtype=np.float64) * width).astype(np.int64), width - 1)


def label(kind: str, b: int, edges=EDGES) -> str:
    """Token text of bin b: "<gap 0d>", "<gap 14-20d>", "<stay 3652-7304d>"."""
    lo, hi = edges[b], edges[b + 1] - 1
    return f"<{kind} {lo}d>" if lo == hi else f"<{kind} {lo}-{hi}d>"
