"""`promptehr.Synthesizer`: train, sample, evaluate and save a PromptEHR model from Python.

    import os
    import promptehr

    data = os.path.join(os.environ["PROMPTEHR_SHARED_DATA"], "mimic3-demo")
    synth = promptehr.Synthesizer(preset="tiny", epochs=1, seed=0).fit(data)
    cohort = synth.sample(50, age=70, female=0.5, seed=0)   # pandas DataFrame, long format
    report = synth.evaluate(cohort)                         # against the held-out 10% of `data`
    print(report.summary())
    synth.save("my-model", overwrite=True)                  # a folder `promptehr generate --model` reads
    again = promptehr.Synthesizer.load("my-model")
    assert again.sample(50, age=70, female=0.5, seed=0).equals(cohort)

A thin layer over the code the CLI runs (docs/python.md): `fit` is `promptehr train` (the same loaders,
split and trainer: promptehr.model.data, .split, .training.train), `sample` is `promptehr generate
--format csv` (promptehr.model.generation.cohort and the long CSV exporter), `evaluate` is `promptehr
evaluate` (promptehr.model.evaluation.build_report), and `save`/`load` read and write the checkpoint
folder those commands use.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from promptehr.frames import frame_patients, records_frame

# Options of `promptehr train` (keyword -> default): TrainConfig fields, then reading, splitting, device.
CONFIG_OPTIONS = {"mode": "hierarchical", "epochs": None, "max_steps": None, "batch_size": None, "lr": None,
                  "seed": 0, "init_from": None}
DATA_OPTIONS = {"format": None, "code_system": None, "map_to": None, "default_age": None, "default_sex": None,
                "split_seed": 0}
TRAIN_OPTIONS = {**CONFIG_OPTIONS, **DATA_OPTIONS, "device": "auto"}
# The CLI's argparse choices and whole-number options, checked here when the Synthesizer is made.
CHOICES = {"preset": ("tiny", "small", "base"), "mode": ("hierarchical", "flat"),
           "format": ("mimic3", "mimic4", "desynpuf", "long"), "code_system": ("icd9", "icd10"),
           "map_to": ("icd9", "icd10"), "default_sex": ("M", "F")}
POSITIVE = ("epochs", "max_steps", "batch_size")


class Scratch:
    """A temporary folder, removed (quietly) when the object holding it goes, or at exit."""

    def __init__(self):
        self.name = tempfile.mkdtemp(prefix="promptehr-synthesizer-")
        self._remove = weakref.finalize(self, shutil.rmtree, self.name, ignore_errors=True)


def check_options(preset: str, options: dict) -> dict:
    """The options with their defaults; TypeError naming unknown ones, ValueError naming a bad value."""
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise TypeError(f"Synthesizer: unknown option(s) {', '.join(unknown)}; expected some of {', '.join(TRAIN_OPTIONS)}")
    values = {**TRAIN_OPTIONS, **options, "preset": preset}
    for name, allowed in CHOICES.items():
        if values[name] is not None and values[name] not in allowed:
            raise ValueError(f"Synthesizer: {name}={values[name]!r}: expected one of {', '.join(allowed)}")
    for name in POSITIVE:
        v = values[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"Synthesizer: {name}={v!r}: expected a whole number >= 1")
    return values


class Synthesizer:
    """A PromptEHR generator: `Synthesizer(preset, **train_options).fit(data)`, then `sample`, `evaluate`, `save`.

    preset: "tiny" | "small" | "base" (model size). train_options are those of `promptehr train`:
    mode, epochs, max_steps, batch_size, lr, seed (training), init_from (a local Hugging Face BART folder),
    format, code_system, map_to, default_age, default_sex (reading the data), split_seed (the
    train/validation/holdout split, 80/10/10) and device ("auto" | "cpu" | "cuda[:i]"). `progress=True`
    shows the CLI's progress bar while training.
    """

    def __init__(self, preset: str = "small", *, progress: bool = False, **train_options):
        self._params = check_options(preset, train_options)
        self.progress = progress
        self._dir: Scratch | None = None  # the checkpoint this object samples from
        self._sampler = None
        self._device = None
        self._train: list | None = None  # the fit data's train and holdout splits (evaluate's default real data)
        self._holdout: list | None = None
        self.result_ = None  # fit: the trainer's TrainResult (epochs, steps, best epoch, log)

    # ---- scikit-learn conventions ---------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        """The preset and every train option (defaults included)."""
        return dict(self._params)

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._params.items() if k != "preset" and v != TRAIN_OPTIONS[k]}
        args = [repr(self._params["preset"])] + [f"{k}={v!r}" for k, v in changed.items()]
        return f"Synthesizer({', '.join(args)})"

    @property
    def checkpoint_dir(self) -> Path:
        """The folder of the fitted model's checkpoint (a temporary one: `save` copies it elsewhere)."""
        self._check_fitted("checkpoint_dir")
        return Path(self._dir.name) / "model"

    # ---- fit ------------------------------------------------------------------------------------
    def fit(self, data) -> Synthesizer:
        """Train on `data`: a data folder or file (MIMIC-III, MIMIC-IV, DE-SynPUF or long format, as
        `promptehr train --data`), a list of them, a long-format pandas DataFrame, or a list of Patient.
        The data is split by `split_seed`; the model trains on train, validates on validation, and the
        holdout is kept for `evaluate`. Returns self."""
        from promptehr.model.nn.config import train_config
        from promptehr.model.split import split_patients
        from promptehr.model.training.prepare import check_demographics

        p = self._params
        patients = self._read(data)
        check_demographics(patients, describe(data))
        train_set, val_set, holdout = split_patients(patients, p["split_seed"])
        cfg = train_config(p["preset"], **{k: p[k] for k in CONFIG_OPTIONS})
        tmp = Scratch()
        out = Path(tmp.name) / "model"
        if self.progress:
            from promptehr.cli.train import train_with_progress as run
        else:
            from promptehr.model.training.train import train as run
        self.result_ = run(train_set, val_set, cfg, out, device=p["device"], holdout=holdout, source=source_of(data, p))
        self._attach(tmp, p["device"])
        self._train, self._holdout = train_set, holdout
        return self

    def _read(self, data) -> list:
        """Patients from a path, paths, DataFrame or list of Patient, prepared as `promptehr train` prepares them
        (--map-to, --default-age, --default-sex)."""
        from promptehr.model.data import load_patients
        from promptehr.model.patient import Patient

        p = self._params
        if isinstance(data, pd.DataFrame):
            if p["format"] not in (None, "long"):
                raise ValueError(f"Synthesizer: format={p['format']!r}, but a DataFrame is read in long format")
            patients = frame_patients(data, p["code_system"])
        elif isinstance(data, Sequence) and not isinstance(data, str) and data and all(isinstance(x, Patient) for x in data):
            patients = list(data)
        else:
            patients = load_patients(data, format=p["format"], code_system=p["code_system"])
        if p["map_to"]:
            from promptehr.model.data.convert import convert_patients

            patients, _ = convert_patients(patients, p["map_to"])
        if p["default_age"] is not None or p["default_sex"] is not None:
            from promptehr.model.training.prepare import fill_demographics

            patients = fill_demographics(patients, age=p["default_age"], sex=p["default_sex"])
        return patients

    def _attach(self, tmp: Scratch, device: str) -> None:
        """Sample from the checkpoint in `tmp`/model (what `promptehr generate` loads: cli/generate.py load_sampler)."""
        from promptehr.model.generation.sampler import Sampler
        from promptehr.model.nn.checkpoint import load_checkpoint
        from promptehr.model.training.train import resolve_device

        self._device = resolve_device(device)
        self._sampler = Sampler.from_bundle(load_checkpoint(Path(tmp.name) / "model", self._device), self._device)
        self._dir = tmp

    def _check_fitted(self, what: str) -> None:
        if self._sampler is None:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"Synthesizer.{what}: this Synthesizer is not fitted yet; call fit(data) "
                                 f"or Synthesizer.load(folder) first")

    # ---- sample ---------------------------------------------------------------------------------
    def sample(self, n: int, *, age=None, female: float | None = None, required_codes=None, seed: int = 0,
               start_date=None, **sampling) -> pd.DataFrame:
        """`n` synthetic patients as a long-format DataFrame: the columns and values `promptehr generate
        --format csv` writes with the same spec and seed (patient_id, visit_id, visit_time, code
        [, code_system], age, sex).

        age: a number (every patient that age), a dict as the API's ({"distribution": "normal", "mean",
        "sd", "min", "max"} | {"distribution": "histogram", "bins", "weights"} | {"distribution": "fixed",
        "value"}), or None; female: the share of women in [0, 1], or None. None takes the training
        population's (the checkpoint's population.json; a checkpoint without one: normal(60, 20) in [0, 90]
        and half women, with a warning), as `promptehr generate` does. required_codes: codes every patient has in the first visit ("4019",
        "icd10:I10"). sampling: temperature, top_p, top_k, stop_bias, code_sampler, frequency_mix, precision, max_visits,
        max_codes_per_visit, batch_size (as `promptehr generate`). The same seed gives the same patients.
        start_date: the date of every record's first visit (a datetime.date or "YYYY-MM-DD"; default
        2020-01-01, as `promptehr generate --start-date`) for a model that learned visit times; a model
        without time gets invented dates (a hash of each patient id), with a warning.
        """
        patients = self.sample_records(n, age=age, female=female, required_codes=required_codes, seed=seed, **sampling)
        if patients and not patients[0].has_time:  # as `promptehr generate` warns
            warnings.warn("this model did not learn visit times: the visit dates are invented (a hash of each "
                          "patient id), not generated", UserWarning, stacklevel=2)
        return records_frame(patients, self._sampler.vocab.code_systems, start_date)

    def sample_records(self, n: int, *, age=None, female: float | None = None, required_codes=None, seed: int = 0,
                       **sampling) -> list:
        """As `sample`, but a list of promptehr.Patient (id, age, sex, visits: lists of codes)."""
        from promptehr.model.generation.cohort import CohortSpec, check_feasible, generate_cohort
        from promptehr.model.generation.options import DEFAULT_BATCH_SIZE
        from promptehr.model.generation.population import resolve_demographics

        self._check_fitted("sample")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a whole number >= 1, got {n!r}")
        batch_size = sampling.pop("batch_size", DEFAULT_BATCH_SIZE)
        # absent age and sex: the training population's (population.json), as `promptehr generate` fills them
        resolved = resolve_demographics(cohort_body(age, female, required_codes, sampling), self.checkpoint_dir)
        if resolved.warning:
            warnings.warn(resolved.warning, UserWarning, stacklevel=2)
        spec = CohortSpec.from_dict(resolved.body)
        check_feasible(spec)
        self._sampler.required_prefix(spec.required_codes)  # codes outside the vocabulary: before any work
        return generate_cohort(None, spec, n, seed, batch_size=batch_size, device=self._device, sampler=self._sampler)

    # ---- evaluate -------------------------------------------------------------------------------
    def evaluate(self, synthetic, real=None, *, seed: int = 0, subsamples: int = 5, model_scores: bool = False,
                 privacy_times: bool = False):
        """The cohort report of `promptehr evaluate` (a promptehr.Report).

        synthetic: a long-format DataFrame (as `sample` returns), a list of Patient, or a cohort file
        `promptehr evaluate --synthetic` reads (.jsonl, .csv, .zip). real: data as `fit` takes, split by
        split_seed as the CLI splits it; None: the data this Synthesizer was fit on (its train and
        holdout splits). model_scores: add the model's perplexity and reconstruction on the holdout
        (`promptehr evaluate --model`). seed, subsamples, privacy_times: as --seed, --subsamples,
        --privacy-times (privacy compares records' times too; a ValueError when some record has none).
        """
        from promptehr.cli.evaluate import model_card, model_code_counts
        from promptehr.model.evaluation import EvaluationConfig, build_report
        from promptehr.report import Report

        self._check_fitted("evaluate")
        cohort = self._cohort(synthetic)
        train, holdout = self._real(real)
        scorer, n_model = None, None
        if model_scores:
            from promptehr.model.evaluation.model_scores import model_patients_for
            from promptehr.model.evaluation.scorer import load_scorer

            scorer, n_model = load_scorer(self.checkpoint_dir, str(self._device)), model_patients_for(str(self._device))
        config = EvaluationConfig(seed=seed, n_subsamples=subsamples, model_patients=n_model, privacy_times=privacy_times)
        report = build_report(cohort, train, holdout, config=config, model_scorer=scorer,
                              split_seed=self._params["split_seed"], model_counts=model_code_counts(self.checkpoint_dir),
                              model_card=model_card(self.checkpoint_dir))  # the card, as evaluate --model shows it
        return Report(report)

    def _cohort(self, synthetic) -> list:
        from promptehr.model.patient import Patient

        if isinstance(synthetic, pd.DataFrame):
            return frame_patients(synthetic)
        if isinstance(synthetic, (str, Path)):
            from promptehr.cli.evaluate import read_synthetic

            return read_synthetic(Path(synthetic))
        if isinstance(synthetic, Sequence) and synthetic and all(isinstance(p, Patient) for p in synthetic):
            return list(synthetic)
        raise TypeError(f"synthetic: expected a long-format DataFrame, a non-empty list of Patient or a cohort file path, "
                        f"got {type(synthetic).__name__}")

    def _real(self, real) -> tuple[list, list]:
        from promptehr.model.split import split_patients

        if real is None:
            if self._holdout is None:
                raise ValueError("evaluate: this Synthesizer was loaded, not fit, so it has no holdout; pass real=DATA "
                                 "(the data it was trained on: it is split by split_seed as `promptehr evaluate` splits it)")
            train, holdout = self._train, self._holdout
        else:
            train, _, holdout = split_patients(self._read(real), self._params["split_seed"])
        if not train or not holdout:
            raise ValueError(f"evaluate: the real data split into {len(train)} train and {len(holdout)} holdout "
                             f"patients (split_seed {self._params['split_seed']}): need both")
        return train, holdout

    # ---- save / load ----------------------------------------------------------------------------
    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write the checkpoint folder (`promptehr generate --model` reads it; `Synthesizer.load` too).
        An existing non-empty folder is refused unless overwrite=True, which replaces the checkpoint's
        files in it and leaves any other file alone."""
        from promptehr.model.nn import checkpoint as ckpt

        self._check_fitted("save")
        out = Path(path)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"save: {out} is a file; expected a folder (new or empty)")
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise FileExistsError(f"save: {out} is not empty; pass overwrite=True to replace the model in it, "
                                  f"or choose a new folder")
        out.mkdir(parents=True, exist_ok=True)
        for name in checkpoint_files(self.checkpoint_dir):  # the manifest last: a half-copied folder does not verify
            shutil.copyfile(self.checkpoint_dir / name, out / name)
        ckpt.verify_manifest(out)
        return out

    @classmethod
    def load(cls, path, *, device: str = "auto", progress: bool = False) -> Synthesizer:
        """A Synthesizer of a checkpoint folder (`Synthesizer.save` or `promptehr train --out`); it samples
        and evaluates (with real=...) at once. The folder is verified (manifest) and copied, so later
        changes to it do not touch this object."""
        from promptehr.model.nn import checkpoint as ckpt
        from promptehr.model.nn.config import load_json

        src = Path(path)
        if not src.is_dir():
            raise NotADirectoryError(f"load: {src}: expected a checkpoint folder (promptehr train --out, Synthesizer.save)")
        names = checkpoint_files(src)
        _, train, _ = load_json(src / ckpt.CONFIG)
        options = {k: getattr(train, k) for k in CONFIG_OPTIONS} if train is not None else {}
        synth = cls(train.preset if train is not None else "small", progress=progress, device=device, **options)
        tmp = Scratch()
        (Path(tmp.name) / "model").mkdir()
        for name in names:
            shutil.copyfile(src / name, Path(tmp.name) / "model" / name)
        synth._attach(tmp, device)
        return synth


def checkpoint_files(directory: Path) -> list[str]:
    """The files of a checkpoint folder, verified against its manifest: those it lists (weights, config,
    vocabulary, log, and population.json or card.json where present), then the manifest itself."""
    from promptehr.model.nn import checkpoint as ckpt

    ckpt.verify_manifest(directory)
    listed = json.loads((Path(directory) / ckpt.MANIFEST).read_text())["files"]
    return [*listed, ckpt.MANIFEST]


def cohort_body(age, female, required_codes, sampling: dict) -> dict:
    """The cohort spec (the API's body, as `promptehr generate` builds it); age and sex stay absent when None,
    so that the model's own defaults apply."""
    limits = {k: sampling.pop(k) for k in ("max_visits", "max_codes_per_visit") if k in sampling}
    body = {"required_codes": [required_codes] if isinstance(required_codes, (str, dict)) else list(required_codes or []),
            "sampling": sampling, **{k: v for k, v in limits.items() if v is not None}}
    if age is not None:
        if isinstance(age, dict):
            body["age"] = dict(age)
        elif isinstance(age, (int, float)) and not isinstance(age, bool):
            body["age"] = {"distribution": "fixed", "value": float(age)}
        else:
            raise TypeError(f"age: expected a number, a dict spec or None, got {type(age).__name__}")
    if female is not None:
        body["sex"] = {"female": female}
    return body


def source_of(data, params: dict) -> dict | None:
    """The model card's data source, as `promptehr train` records it; None for records passed in memory."""
    if isinstance(data, (str, Path)):
        data = [data]
    if isinstance(data, Sequence) and data and all(isinstance(x, (str, Path)) for x in data):
        return {"format": params["format"] or "detected", "paths": [str(x) for x in data]}
    return None


def describe(data) -> str:
    """The data as an error message names it."""
    if isinstance(data, pd.DataFrame):
        return "DataFrame"
    if isinstance(data, (str, Path)):
        return str(data)
    return " ".join(map(str, data)) if data and all(isinstance(x, (str, Path)) for x in data) else "data"
