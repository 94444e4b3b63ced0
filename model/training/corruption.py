"""Training examples: BART denoising corruptions, next-visit prediction and empty-encoder examples.

Every function takes a plain token list (`<s> <v> ... </v> ... </s>`, see model/tokens/tokenizer.py) and a
numpy Generator and returns an Example(encoder, target, scored):

    encoder  tokens the encoder sees
    target   tokens the decoder must produce (decoder input = target[:-1], labels = target[1:])
    scored   bool per target position: the positions a perplexity is measured on (corrupted code
             tokens, or the codes of the predicted next visit)

Only content tokens (categories and codes) are corrupted; `<s>`, `</s>`, `<v>`, `</v>` and the time
tokens (gaps and stays) stay in place, so the encoder always sees a well-formed visit structure and
the visits' times: the denoising objectives teach codes in their timeline, the next-visit and
empty-encoder objectives teach the decoder to write the times themselves.

Objectives:
  mask        span infilling: spans with Poisson(lambda) lengths (at least 1, within one visit) until
              `mask_ratio` of the content is covered; each run of masked tokens becomes one `<mask>`
  delete      each content token deleted with probability p
  replace     each content token replaced with probability p by a random token of the same kind
              (code by code, category by category)
  next_visit  encoder = `<s>` visits[:k] `<mask>` `</s>` for a random 1 <= k < n_visits; target = the whole
              record; scored = the codes of visit k, the "next visit". The trailing `<mask>` says "the rest
              of the record is missing", so continuation is span infilling at the end: without it the
              encoder looks like a clean record, and a model trained mostly to reproduce its input starts
              the target by repeating visit 1 (next-visit perplexity then rose above the unigram
              baseline's as training went on; measured on DE-SynPUF sample 1)
  empty       encoder = no tokens at all (the prompt alone, as model/generation/sampler.py generates); target = the whole
              record: generation from demographics alone
The target of the denoising objectives is the original sequence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from promptehr.model.tokens.layout import TokenLayout
from promptehr.model.tokens.vocab import BOS, END_VISIT, EOS, MASK, SPECIALS, VISIT

OBJECTIVES = ("mask", "delete", "replace", "next_visit", "empty")


@dataclass
class Example:
    encoder: list[int]
    target: list[int]
    scored: list[bool]
    objective: str = ""


def is_content(tokens: np.ndarray, layout: TokenLayout) -> np.ndarray:
    return tokens >= layout.category_offset


def is_code(tokens: np.ndarray, layout: TokenLayout) -> np.ndarray:
    return tokens >= layout.code_offset


# ---- denoising ---------------------------------------------------------------------------------
def span_mask(tokens: list[int], rng: np.random.Generator, layout: TokenLayout, ratio: float = 0.3,
              lam: float = 3.0) -> Example:
    t = np.asarray(tokens)
    content = is_content(t, layout)
    n_content = int(content.sum())
    masked = np.zeros(len(t), dtype=bool)
    goal = round(ratio * n_content)
    if n_content and goal == 0:
        goal = 1
    positions = np.flatnonzero(content)
    n_masked = 0
    for _ in range(4 * n_content):  # bounded: spans may overlap
        if n_masked >= goal:
            break
        start = int(positions[rng.integers(len(positions))])
        length = min(max(1, int(rng.poisson(lam))), goal - n_masked)
        end = start
        while end < len(t) and content[end] and end - start < length:  # stays inside the visit
            end += 1
        masked[start:end] = True
        n_masked = int(masked.sum())
    encoder: list[int] = []
    for i, tok in enumerate(tokens):
        if masked[i]:
            if not (i > 0 and masked[i - 1]):
                encoder.append(MASK)  # one <mask> per run
        else:
            encoder.append(tok)
    return Example(encoder, list(tokens), (masked & is_code(t, layout)).tolist(), "mask")


def delete_tokens(tokens: list[int], rng: np.random.Generator, layout: TokenLayout, p: float = 0.15) -> Example:
    t = np.asarray(tokens)
    gone = is_content(t, layout) & (rng.random(len(t)) < p)
    encoder = t[~gone].tolist()
    return Example(encoder, list(tokens), (gone & is_code(t, layout)).tolist(), "delete")


def replace_tokens(tokens: list[int], rng: np.random.Generator, layout: TokenLayout, p: float = 0.15) -> Example:
    t = np.asarray(tokens)
    hit = is_content(t, layout) & (rng.random(len(t)) < p)
    codes = is_code(t, layout)
    random_code = rng.integers(layout.code_offset, layout.vocab_size, size=len(t))
    random_category = rng.integers(layout.category_offset, max(layout.code_offset, layout.category_offset + 1),
                                   size=len(t))
    encoder = np.where(hit, np.where(codes, random_code, random_category), t)
    return Example(encoder.tolist(), list(tokens), (hit & codes).tolist(), "replace")


# ---- next visit and empty encoder --------------------------------------------------------------
def split_visits(tokens: list[int]) -> list[list[int]]:
    """`<s> <v> a </v> <v> b </v> </s>` -> [[<v> a </v>], [<v> b </v>]]; a gap token before a visit
    (model/tokens/tokenizer.py) goes with it: `... </v> G <v> b </v>` -> [..., [G <v> b </v>]]."""
    visits, current, lead = [], None, []
    for tok in tokens:
        if tok == VISIT:
            current, lead = lead + [tok], []
        elif tok == END_VISIT and current is not None:
            current.append(tok)
            visits.append(current)
            current = None
        elif current is not None:
            current.append(tok)
        elif tok >= len(SPECIALS):  # between visits: a gap token
            lead.append(tok)
    return visits


def next_visit(tokens: list[int], rng: np.random.Generator, layout: TokenLayout, k: int | None = None) -> Example | None:
    """None when the record has fewer than 2 visits."""
    visits = split_visits(tokens)
    if len(visits) < 2:
        return None
    if k is None:
        k = int(rng.integers(1, len(visits)))
    history = [x for v in visits[:k] for x in v]
    encoder = [BOS] + history + [MASK, EOS]
    target = list(tokens)
    scored = np.zeros(len(target), dtype=bool)
    first = np.asarray(visits[k])
    start = target.index(BOS) + 1 + len(history)  # visit k's place in the whole record
    scored[start:start + len(first)] = is_code(first, layout)
    return Example(encoder, target, scored.tolist(), "next_visit")


def empty_encoder(tokens: list[int]) -> Example:
    return Example([], list(tokens), [False] * len(tokens), "empty")


# ---- choosing an objective ---------------------------------------------------------------------
def make_example(tokens: list[int], rng: np.random.Generator, layout: TokenLayout, config) -> Example:
    """One training example; the objective drawn from `config.objectives` (next_visit needs 2+ visits)."""
    names = [n for n in OBJECTIVES if config.objectives.get(n, 0) > 0]
    if tokens.count(VISIT) < 2:
        names = [n for n in names if n != "next_visit"]
    w = np.array([config.objectives[n] for n in names], dtype=float)
    name = names[int(rng.choice(len(names), p=w / w.sum()))]
    if name == "mask":
        return span_mask(tokens, rng, layout, config.mask_ratio, config.poisson_lambda)
    if name == "delete":
        return delete_tokens(tokens, rng, layout, config.delete_prob)
    if name == "replace":
        return replace_tokens(tokens, rng, layout, config.replace_prob)
    if name == "next_visit":
        return next_visit(tokens, rng, layout)
    return empty_encoder(tokens)


def validation_examples(sequences: list[list[int]], layout: TokenLayout, config, seed: int) -> list[tuple[int, Example]]:
    """Fixed validation set: (patient index, example) for a span-masked copy of every record and a
    next-visit example for every record with 2+ visits. Same seed -> same examples."""
    rng = np.random.default_rng(seed)
    out = []
    for i, tokens in enumerate(sequences):
        out.append((i, span_mask(tokens, rng, layout, config.mask_ratio, config.poisson_lambda)))
        ex = next_visit(tokens, rng, layout)
        if ex is not None:
            out.append((i, ex))
    return out
