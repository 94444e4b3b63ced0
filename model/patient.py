"""The one in-memory form every loader produces and every other part consumes."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(slots=True)
class Patient:
    """A patient: demographics plus visits in time order, and when they happened where that is known.

    Codes are undotted strings in the form of model/codes.py: ICD-9-CM bare as the source has them
    ("4019", "V5861", "E8889"), ICD-10-CM with their system ("icd10:I10"); de-duplicated within a
    visit in their original order. `age` is in years at the first visit
    (capped at 90), `sex` is "M" or "F".

    Time, in whole days (calendar dates: a visit at 23:00 and one at 01:00 the next morning are a day
    apart), None where the source has none:
      visit_days  one per visit: days from the first visit's start to this visit's start (first 0,
                  never decreasing)
      los_days    one per visit: days from the visit's start to its end (0 = same day)
      start_date  the first visit's date (real records; a synthetic record has none: exports place it
                  from a start date)
    """

    id: str
    age: float
    sex: str
    visits: list[list[str]] = field(default_factory=list)
    visit_days: list[int] | None = None
    los_days: list[int] | None = None
    start_date: dt.date | None = None

    def __post_init__(self):
        n = len(self.visits)
        if self.visit_days is not None:
            if len(self.visit_days) != n or (n and self.visit_days[0] != 0) or any(
                    b < a for a, b in zip(self.visit_days, self.visit_days[1:])):
                raise ValueError(f"patient {self.id!r}: visit_days must give one day per visit, 0 first, never "
                                 f"decreasing; got {self.visit_days} for {n} visits")
        if self.los_days is not None and (len(self.los_days) != n or any(d < 0 for d in self.los_days)):
            raise ValueError(f"patient {self.id!r}: los_days must give one stay >= 0 per visit; got {self.los_days} "
                             f"for {n} visits")

    @property
    def n_codes(self) -> int:
        return sum(len(v) for v in self.visits)

    @property
    def has_time(self) -> bool:
        return self.visit_days is not None

    def to_dict(self) -> dict:
        """The JSONL record; the time fields only when known (a record without time is written as before)."""
        d = {"patient_id": self.id, "age": self.age, "sex": self.sex, "visits": [list(v) for v in self.visits]}
        if self.visit_days is not None:
            d["visit_days"] = list(self.visit_days)
        if self.los_days is not None:
            d["los_days"] = list(self.los_days)
        if self.start_date is not None:
            d["start_date"] = self.start_date.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Patient":
        days, los, start = d.get("visit_days"), d.get("los_days"), d.get("start_date")
        return cls(id=str(d["patient_id"]), age=float(d["age"]), sex=str(d["sex"]), visits=[list(v) for v in d["visits"]],
                   visit_days=[int(x) for x in days] if days is not None else None,
                   los_days=[int(x) for x in los] if los is not None else None,
                   start_date=dt.date.fromisoformat(start) if start is not None else None)
