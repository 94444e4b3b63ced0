"""Cohort spec: who to generate (demographic distributions or given demographics, required codes,
sampling options), per-patient seeds, and sharded generation.

Patient `index` of the cohort of `seed` is fully determined by (seed, index): its demographics come
from `numpy.random.default_rng([seed, index, 1])` and its tokens from the hash stream
`streams.row_key(seed, index)` (the days inside its time tokens' bins from the TIME stream). So any shard [start, stop) can be generated anywhere, in any batch
size, and concatenating shards gives the cohort generated in one go. `iter_cohort` streams a range
a chunk of CHUNK_BATCHES batches at a time (what `promptehr generate` writes from, so its memory is
bounded by a chunk, not by the cohort); `generate_cohort` returns a range as a list.

Ages are whole years in [0, 90], the form every loader produces (model/data/assemble.py).

Required codes ("patients who have 250.00") name their system as model/codes.py writes codes: a bare
string is ICD-9-CM ("25000", "250.00", as specs always had them), a prefixed one names it ("icd9:4019",
"icd10:I10"), and so does an object ({"code": "I10", "system": "icd10"}); the spec keeps them in the
in-memory form ("25000", "icd10:I10"). They are forced as the first codes of the first visit via
the decoder: teacher-forced `<v> K(r1) r1 K(r2) r2 ...`, after which the model continues the visit
and the record conditioned on them. Forcing guarantees inclusion. A required code forbidden for the
drawn demographics (a pregnancy code for a man) would break a rule, so the patient's demographics
are redrawn from its own stream until every required code is allowed (after MAX_REDRAWS, drawn from
the allowed pairs directly: model/generation/conditional.py); a spec where that cannot
happen (fixed age/sex conflicting with a code) is refused up front.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from promptehr.model import codes
from promptehr.model.generation.conditional import conditional_demographics
from promptehr.model.generation.options import DEFAULT_BATCH_SIZE, SamplingOptions
from promptehr.model.generation.streams import row_key
from promptehr.model.patient import Patient
from promptehr.model.rules import is_allowed

# SamplingOptions comes from options.py, not draw.py: this module stays torch-free, so that the API
# (service/spec_checks.py) checks a spec with the parser and feasibility check the worker runs.
MAX_AGE = 90
MAX_REDRAWS = 200


@dataclass(frozen=True)
class AgeSpec:
    """{"distribution": "fixed", "value"} | {"distribution": "normal", "mean", "sd", "min", "max"}
    | {"distribution": "histogram", "bins": [edges...], "weights": [one per bin]}."""

    distribution: str = "normal"
    value: float | None = None
    mean: float = 60.0
    sd: float = 20.0
    min: float = 0.0
    max: float = 90.0
    bins: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()

    def __post_init__(self):
        d = self.distribution
        if d == "fixed":
            if self.value is None or not 0 <= self.value <= MAX_AGE:
                raise ValueError(f"fixed age needs a value in [0, {MAX_AGE}], got {self.value}")
        elif d == "normal":
            if not self.sd >= 0:
                raise ValueError(f"age sd must be >= 0, got {self.sd}")
            if not 0 <= self.min <= self.max <= MAX_AGE:
                raise ValueError(f"age bounds need 0 <= min <= max <= {MAX_AGE}, got min={self.min} max={self.max}")
        elif d == "histogram":
            b, w = np.asarray(self.bins, float), np.asarray(self.weights, float)
            if len(b) < 2 or len(w) != len(b) - 1:
                raise ValueError(f"age histogram needs n+1 bin edges and n weights, got {len(b)} edges and {len(w)} weights")
            if (np.diff(b) <= 0).any() or b[0] < 0 or b[-1] > MAX_AGE + 1:
                raise ValueError(f"age bin edges must increase within [0, {MAX_AGE + 1}], got {list(self.bins)}")
            if (w < 0).any() or not 0 < w.sum() < np.inf:  # an infinite sum ([1e308, 1e308]) draws NaN
                raise ValueError("age weights must be >= 0, not all 0, and sum to a finite number")
        else:
            raise ValueError(f"unknown age distribution {d!r}: expected fixed, normal or histogram")

    @classmethod
    def from_dict(cls, d: dict) -> AgeSpec:
        d = dict(d)
        for k in ("bins", "weights"):
            if k in d:
                d[k] = tuple(float(x) for x in d[k])
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown age field(s) {sorted(unknown)}: expected some of {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        if self.distribution == "fixed":
            return {"distribution": "fixed", "value": self.value}
        if self.distribution == "normal":
            return {"distribution": "normal", "mean": self.mean, "sd": self.sd, "min": self.min, "max": self.max}
        return {"distribution": "histogram", "bins": list(self.bins), "weights": list(self.weights)}

    def draw(self, rng: np.random.Generator) -> float:
        """One age in whole years."""
        if self.distribution == "fixed":
            return float(np.floor(self.value))
        if self.distribution == "normal":
            lo, hi = np.floor(self.min), np.floor(self.max)
            for _ in range(100):  # truncated normal by rejection; clip if the window is far in a tail
                a = np.floor(rng.normal(self.mean, self.sd))
                if lo <= a <= hi:
                    return float(a)
            return float(np.clip(np.floor(self.mean), lo, hi))
        b, w = np.asarray(self.bins, float), np.asarray(self.weights, float)
        j = rng.choice(len(w), p=w / w.sum())
        # uniform over the whole years in [b_j, b_j+1)
        a = np.floor(rng.uniform(b[j], b[j + 1]))
        return float(min(a, MAX_AGE))

    def support(self) -> tuple[float, float]:
        if self.distribution == "fixed":
            return float(np.floor(self.value)), float(np.floor(self.value))
        if self.distribution == "normal":
            return float(np.floor(self.min)), float(np.floor(self.max))
        return float(self.bins[0]), float(min(self.bins[-1], MAX_AGE))


@dataclass(frozen=True)
class CohortSpec:
    """The body of POST /cohorts less model, size and seed:
    {"age": {...}, "sex": {"female": 0.55}, "required_codes": ["25000", "icd10:I10", {"code": "E119", "system": "icd10"}],
     "sampling": {"temperature": 1.0, "top_p": 1.0},
     "patients": [{"age": 70, "sex": "F"}, ...]  (optional: given demographics, patient i gets patients[i])}."""

    age: AgeSpec = field(default_factory=AgeSpec)
    female: float = 0.5
    required_codes: tuple[str, ...] = ()
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    patients: tuple[tuple[float, str], ...] | None = None
    max_visits: int | None = None  # None: the model's default
    max_codes_per_visit: int | None = None

    def __post_init__(self):
        if not 0 <= self.female <= 1:
            raise ValueError(f"female share must be in [0, 1], got {self.female}")
        if len(set(self.required_codes)) != len(self.required_codes):
            raise ValueError("required codes repeat a code")
        for a, s in self.patients or ():
            if s not in ("M", "F") or not 0 <= a <= MAX_AGE:
                raise ValueError(f"given demographics need sex M/F and age in [0, {MAX_AGE}], got ({a}, {s!r})")

    @classmethod
    def from_dict(cls, body: dict) -> CohortSpec:
        body = dict(body)
        # a None field is one left to the checkpoint (population.py fills stop_bias); unresolved: the default
        sampling = {k: v for k, v in (body.pop("sampling", None) or {}).items() if v is not None}
        age = body.pop("age", None)
        sex = body.pop("sex", None) or {}
        patients = body.pop("patients", None)
        required = body.pop("required_codes", None) or ()
        kw = {k: body.pop(k) for k in ("max_visits", "max_codes_per_visit") if k in body}
        body.pop("demographics", None)  # where age and sex came from (population.py): a record, not an input
        unknown = set(sampling) - set(SamplingOptions.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown sampling field(s) {sorted(unknown)}: expected some of "
                             f"{', '.join(SamplingOptions.__dataclass_fields__)}")
        if body:
            raise ValueError(f"unknown cohort field(s) {sorted(body)}")
        return cls(
            age=AgeSpec.from_dict(age) if age else AgeSpec(),
            female=float(sex.get("female", 0.5)),
            required_codes=tuple(required_code(c) for c in required),
            sampling=SamplingOptions(**sampling),
            patients=tuple((float(np.floor(float(p["age"]))), str(p["sex"])) for p in patients) if patients is not None else None,
            **kw,
        )

    def to_dict(self) -> dict:
        d = {"age": self.age.to_dict(), "sex": {"female": self.female}, "required_codes": list(self.required_codes),
             "sampling": asdict(self.sampling)}
        if self.patients is not None:
            d["patients"] = [{"age": a, "sex": s} for a, s in self.patients]
        for k in ("max_visits", "max_codes_per_visit"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


def required_code(item) -> str:
    """One required code in its in-memory form: {"code": "I10", "system": "icd10"} -> "icd10:I10",
    "icd9:401.9" -> "4019", "250.00" -> "25000" (a bare string is ICD-9-CM); ValueError otherwise."""
    if isinstance(item, dict) and set(item) != {"code", "system"}:
        raise ValueError(f"required code {item!r}: expected an object with exactly a code and a system (icd9 or icd10)")
    try:
        code = codes.normalize(str(item["code"]), str(item["system"])) if isinstance(item, dict) else codes.normalize(str(item))
    except ValueError as e:  # an unknown system name, or a prefix that disagrees with the system
        raise ValueError(f"required code {item!r}: {e}") from None
    if not codes.is_valid(code):
        system = codes.system_of(code)
        hint = ""
        if isinstance(item, str) and ":" not in item and codes.is_valid(codes.qualify(codes.bare(code), "icd10")):
            hint = f"; a bare code is ICD-9-CM, an ICD-10-CM one is written icd10:{codes.bare(code)}"
        raise ValueError(f"required code {item!r}: not an {codes.NAMES[system]} diagnosis code "
                         f"(such as {codes.EXAMPLES[system]}){hint}")
    return code


def patient_id(seed: int, index: int) -> str:
    return f"syn-{seed}-{index:07d}"


def _required_ok(codes: tuple[str, ...], age: float, sex: str) -> bool:
    return all(is_allowed(c, sex, age) for c in codes)


def check_feasible(spec: CohortSpec) -> None:
    """Refuse a spec whose required codes no drawable patient may carry (ValueError)."""
    if not spec.required_codes:
        return
    if spec.patients is not None:
        for i, (a, s) in enumerate(spec.patients):
            if not _required_ok(spec.required_codes, a, s):
                raise ValueError(f"required codes {list(spec.required_codes)} break a sex/age rule for given patient {i} ({a:g}, {s})")
        return
    sexes = [s for s, share in (("F", spec.female), ("M", 1 - spec.female)) if share > 0]
    lo, hi = spec.age.support()
    ages = np.arange(lo, hi + 1)
    if spec.age.distribution == "histogram":
        b, w = np.asarray(spec.age.bins), np.asarray(spec.age.weights)
        j = np.clip(np.searchsorted(b, ages, side="right") - 1, 0, len(w) - 1)
        ages = ages[w[j] > 0]
    if not any(_required_ok(spec.required_codes, float(a), s) for a in ages for s in sexes):
        raise ValueError(f"required codes {list(spec.required_codes)} break a sex/age rule for every patient this spec can draw")


def demographics(spec: CohortSpec, seed: int, index: int) -> tuple[float, str]:
    """(age, sex) of patient `index`: a function of (spec, seed, index) alone."""
    if spec.patients is not None:
        return spec.patients[index]
    rng = np.random.default_rng([int(seed) & (2**63 - 1), int(index), 1])
    for _ in range(MAX_REDRAWS):
        age = spec.age.draw(rng)
        sex = "F" if rng.random() < spec.female else "M"
        if not spec.required_codes or _required_ok(spec.required_codes, age, sex):
            return age, sex
    # few drawable patients may carry the codes: draw from those directly (model/generation/conditional.py)
    return conditional_demographics(spec, rng)


# Patients a streamed cohort generates per sampler call: memory holds one chunk (the sampler keeps every
# token of a call until it returns), while each chunk stays long enough that the last batch's tail, run
# without the next batch's rows to fill it, costs little (1/8 of a batch's stragglers per 8 batches).
CHUNK_BATCHES = 8


def iter_cohort(model_bundle, spec: CohortSpec | dict, n_patients: int, seed: int, start: int = 0, stop: int | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu", progress: Callable[[int, int], None] | None = None,
                sampler=None, chunk: int | None = None) -> Iterator[Patient]:
    """Patients [start, stop) of the cohort, lazily, in index order: generated `chunk` at a time (default
    CHUNK_BATCHES batches), so memory holds one chunk, never the cohort. The same patients as
    generate_cohort (a patient depends on (seed, index) alone). A bad spec or shard raises here, before
    any patient; `progress(done, total)` counts this range's patients after each batch."""
    spec, sampler, forced, limits, stop = _prepare(model_bundle, spec, n_patients, start, stop, batch_size, device, sampler)
    step = chunk or CHUNK_BATCHES * batch_size
    if step < 1:
        raise ValueError("chunk must be >= 1")
    return _chunks(sampler, spec, seed, forced, limits, range(start, stop), step, batch_size, progress)


def generate_cohort(model_bundle, spec: CohortSpec | dict, n_patients: int, seed: int, start: int = 0, stop: int | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu", progress: Callable[[int, int], None] | None = None,
                    sampler=None) -> list[Patient]:
    """Patients [start, stop) of the cohort (stop defaults to n_patients), in one sampler call. Shards
    concatenate to the whole.

    `model_bundle` is what checkpoint.load_checkpoint returns (model, vocab, tokenizer, config);
    `progress(done, total)` is called after each batch with counts for this shard.
    """
    stop = n_patients if stop is None else stop
    return list(iter_cohort(model_bundle, spec, n_patients, seed, start, stop, batch_size, device, progress, sampler,
                            chunk=max(1, stop - start)))


def _prepare(model_bundle, spec, n_patients: int, start: int, stop: int | None, batch_size: int, device, sampler):
    """Checks of a range of a cohort, and what sampling it needs: (spec, sampler, forced prefix, limits, stop)."""
    # Here, not at the top: the sampler imports model.nn.promptbart, so transformers: importing it takes
    # about 5 s more than this module (measured: 7.1-8.4 s against 2.4-3.3 s), and `promptehr generate`
    # checks a spec (CohortSpec, check_feasible) before it loads any model.
    from promptehr.model.generation.sampler import Sampler

    if isinstance(spec, dict):
        spec = CohortSpec.from_dict(spec)
    stop = n_patients if stop is None else stop
    if not 0 <= start <= stop <= n_patients:
        raise ValueError(f"shard [{start}, {stop}) is not inside [0, {n_patients})")
    if spec.patients is not None and len(spec.patients) != n_patients:
        raise ValueError(f"{len(spec.patients)} given demographics for {n_patients} patients")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    check_feasible(spec)
    sampler = sampler or Sampler.from_bundle(model_bundle, device=device)
    if not sampler.layout.hierarchical and (spec.sampling.code_sampler == "frequency" or spec.sampling.frequency_mix):
        raise ValueError("sampling.code_sampler 'frequency' and sampling.frequency_mix choose among a category's "
                         "codes: they need a hierarchical model, and this one is flat")
    forced = sampler.required_prefix(spec.required_codes)
    limits = sampler.limits(spec.max_visits, spec.max_codes_per_visit, n_forced=len(spec.required_codes))
    return spec, sampler, forced, limits, stop


def _chunks(sampler, spec: CohortSpec, seed: int, forced, limits, indices: range, step: int, batch_size: int,
            progress: Callable[[int, int], None] | None) -> Iterator[Patient]:
    total = len(indices)
    for lo in range(0, total, step):
        idx = indices[lo:lo + step]
        demo = [demographics(spec, seed, i) for i in idx]
        ages, sexes = [a for a, _ in demo], [s for _, s in demo]
        keys = [row_key(seed, i) for i in idx]
        report = (lambda done, lo=lo: progress(lo + done, total)) if progress is not None else None
        seqs = sampler.generate_many(ages, sexes, keys, spec.sampling, forced=[forced] * len(idx), limits=limits,
                                     batch_size=batch_size, progress=report)
        for i, a, s, t in zip(idx, ages, sexes, seqs):
            visits, days, los = sampler.record_of(t, seed, i)
            yield Patient(id=patient_id(seed, i), age=a, sex=s, visits=visits, visit_days=days, los_days=los)
