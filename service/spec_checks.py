"""What POST /cohorts checks beyond the request's shape, so that every spec accepted with 202 can run:
the worker's own spec validation, the model's vocabulary, and the sex/age rules against the
demographics the spec can draw. Each failure is a 422 naming the field.

The checks are the model's, not copies: model.generation.cohort (torch-free) parses the stored spec
as the generating worker does and says which (age, sex) a spec can draw (check_feasible), and
model/rules.py says what each code allows. The vocabulary is the checkpoint's vocab.json
(model/tokens/checkpoint_codes.py); when the API cannot vouch for that file (no checkpoint under
its model root, or not the registered one) the vocabulary check is left to the worker, which refuses
such a checkpoint whatever the spec: that failure is the server's state, not the client's spec.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from promptehr.model import codes
from promptehr.model.generation.cohort import CohortSpec, check_feasible
from promptehr.model.rules import rules_for
from promptehr.model.generation.population import resolve_demographics
from promptehr.model.tokens.checkpoint_codes import checkpoint_dir, read_codes
from promptehr.service.problems import field_error, validation_problem

FIELD = ("body", "required_codes")


def check_runnable(spec: dict[str, Any], model, model_root) -> None:
    """A 422 unless the generating worker can run `spec` (CohortCreate.spec()) with `model` (a Model row)."""
    directory = checkpoint_dir(model_root, model.checkpoint_path)
    known = read_codes(directory, model.manifest_sha256)
    if known is not None:  # the registered checkpoint: an absent age or sex is its learned one, as in the worker
        spec = resolve_demographics(spec, directory).body
    try:
        parsed = CohortSpec.from_dict(spec)
    except ValueError as e:  # what the model refuses and the request schema let through
        raise validation_problem([field_error(["body"], f"the model cannot generate this spec: {e}")]) from None
    errors = [] if known is None else [
        field_error([*FIELD, i], f"{codes.label(c)}: not in the model's vocabulary (the model was not trained "
                    "on it, or saw it too rarely), so it cannot be generated")
        for i, c in enumerate(parsed.required_codes) if c not in known]
    errors += _impossible(parsed)
    if errors:
        raise validation_problem(errors)


def _impossible(spec: CohortSpec) -> list[dict[str, Any]]:
    """Required codes no patient the spec can draw may carry (a delivery code for men only, a newborn
    code for adults): one error per such code, or one for the list when each is possible alone but
    no patient may carry them all (a delivery and a newborn code)."""
    errors = []
    for i, code in enumerate(spec.required_codes):
        try:
            check_feasible(replace(spec, required_codes=(code,)))
        except ValueError:
            rules = "; ".join(r.name for r in rules_for(code))
            errors.append(field_error([*FIELD, i], f"{codes.label(code)} ({rules}): no patient this age and sex "
                                      "spec can draw may carry it"))
    if errors:
        return errors
    try:
        check_feasible(spec)
    except ValueError:
        return [field_error(FIELD, "no patient this age and sex spec can draw may carry all of these codes together "
                            "(each is allowed for other ages or sexes)")]
    return []
