"""The one in-memory form every loader produces and every other part consumes."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Patient:
    """A patient: demographics plus visits in time order.

    Codes are undotted strings in the form of model/codes.py: ICD-9-CM bare as the source has them
    ("4019", "V5861", "E8889"), ICD-10-CM with their system ("icd10:I10"); de-duplicated within a
    visit in their original order. `age` is in years at the first visit
    (capped at 90), `sex` is "M" or "F".
    """

    id: str
    age: float
    sex: str
    visits: list[list[str]] = field(default_factory=list)

    @property
    def n_codes(self) -> int:
        return sum(len(v) for v in self.visits)

    def to_dict(self) -> dict:
        return {"patient_id": self.id, "age": self.age, "sex": self.sex, "visits": [list(v) for v in self.visits]}

    @classmethod
    def from_dict(cls, d: dict) -> "Patient":
        return cls(id=str(d["patient_id"]), age=float(d["age"]), sex=str(d["sex"]), visits=[list(v) for v in d["visits"]])
