"""Scoring a trained model for the evaluation report: held-out perplexity and record reconstruction.

    scorer = load_scorer("runs/m1", "cpu")
    scorer.perplexity(holdout)                 # {"masked": ..., "next_visit": ..., plus the unigram baseline}
    scorer.reconstruct([split_half(p)[0] for p in holdout], seed=0)   # model_scores.split_half

Perplexity is model/training/perplexity.py's standard exp(mean NLL) over masked codes and over next-visit
codes, with the research system's median of medians beside it, both from one pass (code_nll.py).

Reconstruction completes each given partial record with the batched sampler: the prefix is forced as
decoder tokens (closed visits, the last visit left open), the encoder sees the demographics only, as
for generation, and the model continues the open visit and the rest of the record. The result starts
with the prefix exactly as given (same visits, same codes, same order) and continues it. Prefix codes
the model cannot emit are left out of the forcing only: codes outside the vocabulary, and codes a rule
forbids for the patient (real data has a few). Limits are raised to fit the prefixes, and prefixes longer
than the model's max_length lose their oldest visits from the forcing first. All records go through one
generate_many call in order of prefix length, so that a batch holds rows of similar length and its
stragglers join the next batch (cutting the records into separate calls of 256 ran every batch to its
longest row: 32 records/s on DE-SynPUF against 176 for a cohort).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from promptehr.model.evaluation.code_nll import heldout_scores
from promptehr.model.generation.draw import SamplingOptions
from promptehr.model.generation.sampler import Sampler
from promptehr.model.generation.streams import row_key
from promptehr.model.nn.checkpoint import load_checkpoint
from promptehr.model.patient import Patient


@dataclass
class Scorer:
    sampler: Sampler
    tokenizer: object
    device: str = "cpu"

    @property
    def model(self):
        return self.sampler.model

    @property
    def time_fields(self) -> tuple[str, ...]:
        """The Patient fields a record needs to be scored: the times of a model that learned them."""
        L = self.sampler.layout
        return (("visit_days",) if L.gaps else ()) + (("los_days",) if L.stays else ())

    def perplexity(self, patients, *, seed: int = 1234, batch_size: int = 16) -> dict[str, float]:
        """Flat {name: float} on held-out patients: "masked", "next_visit", "all" (exp(mean NLL)), the
        unigram baseline's "baseline_masked", "baseline_next_visit", "baseline_all", the research
        system's "masked_median_of_medians" and "next_visit_median_of_medians", and "n_scored_*".
        Batches of 16: sorted by length, smaller batches pad less (DE-SynPUF, 400 patients, 1 thread:
        10.1 s at 8, 12.7 s at 32, 16.5 s at 128)."""
        r = heldout_scores(self.model, self.sampler.vocab, self.tokenizer, patients, seed=seed, batch_size=batch_size,
                           device=self.device)
        return {k: float(v) for k, v in r.items()}

    def _usable_prefix(self, p: Patient) -> Patient:
        """The part of `p` the model can be forced with: its usable codes, the visits that keep any, their
        times re-based to the first one kept (a model with time forces them too)."""
        vocab, rules = self.sampler.vocab, self.sampler.rules
        ok_tokens = rules.mask(np.asarray([p.sex]), np.asarray([p.age], dtype=float))[0]
        visits, kept = [], []
        for k, v in enumerate(p.visits):
            keep = []
            for c in dict.fromkeys(v):
                tid = vocab.code_id(c)
                if tid is not None and ok_tokens[tid] and ok_tokens[vocab.category_token_of(tid)]:
                    keep.append(c)
            if keep:
                visits.append(keep)
                kept.append(k)
        # fit <s> prefix K c [S] </v> </s> inside max_length (time tokens: a gap before each later visit,
        # a stay in each): oldest visits go first
        L = self.sampler.layout
        per_code, gap, stay = (2 if L.hierarchical else 1), int(L.gaps), int(L.stays)
        def cost(vs):
            return 1 + sum(2 + gap + stay + per_code * len(v) for v in vs) - gap + per_code + 2 + stay
        while visits and cost(visits) > self.sampler.config.max_length:
            visits, kept = visits[1:], kept[1:]
        days = [p.visit_days[k] - p.visit_days[kept[0]] for k in kept] if p.visit_days is not None and kept else None
        los = [p.los_days[k] for k in kept] if p.los_days is not None else None
        return Patient(id=p.id, age=p.age, sex=p.sex, visits=visits, visit_days=days if visits else None,
                       los_days=los if visits else None)

    def reconstruct(self, prefix_patients, *, seed: int = 0, sampling: SamplingOptions | None = None,
                    batch_size: int = 256) -> list[Patient]:
        """Each partial record completed by the model (ids, age and sex kept); row i draws from
        row_key(seed, i) whatever its place in the batches."""
        opts = sampling or SamplingOptions()
        patients = list(prefix_patients)
        if not patients:
            return []
        prefixes = [self._usable_prefix(p) for p in patients]
        default = self.sampler.limits()
        limits = self.sampler.limits(
            max_visits=max([len(v.visits) + 1 for v in prefixes] + [default.max_visits]),
            max_codes_per_visit=max([len(x) for v in prefixes for x in v.visits] + [default.max_codes_per_visit]),
        )
        forced = [self.sampler.record_prefix(v.visits, v.visit_days, v.los_days) for v in prefixes]
        order = sorted(range(len(patients)), key=lambda i: len(forced[i]))  # similar lengths share a batch
        seqs = self.sampler.generate_many([patients[i].age for i in order], [patients[i].sex for i in order],
                                          [row_key(seed, i) for i in order], opts, forced=[forced[i] for i in order],
                                          limits=limits, batch_size=batch_size)
        out: list[Patient | None] = [None] * len(patients)
        for i, s in zip(order, seqs):
            out[i] = self._complete(patients[i], s[len(forced[i]):])
        return out

    def _complete(self, prefix: Patient, continuation: list[int]) -> Patient:
        """The prefix exactly as given (codes the forcing left out included) followed by what the model
        added: codes before the first <v> continue the prefix's last visit, then the new visits."""
        L, tokens = self.sampler.layout, self.sampler.vocab.tokens
        visits = [list(v) for v in prefix.visits]
        tail = list(visits[-1]) if visits else []
        cur: list[str] | None = tail if visits else None
        for t in continuation:
            if t == L.visit_open:
                cur = []
            elif t == L.visit_close:
                if cur is tail:
                    visits[-1] = tail
                elif cur:
                    visits.append(cur)
                cur = None
            elif t == L.eos:
                break
            elif t >= L.code_offset and cur is not None and tokens[t] not in cur:
                cur.append(tokens[t])
        return Patient(id=prefix.id, age=prefix.age, sex=prefix.sex, visits=visits)


def load_scorer(model_dir, device: str = "cpu") -> Scorer:
    model, vocab, tokenizer, config = load_checkpoint(model_dir, device)
    return Scorer(sampler=Sampler.from_bundle((model, vocab, tokenizer, config), device), tokenizer=tokenizer, device=str(device))
