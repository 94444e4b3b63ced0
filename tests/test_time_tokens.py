"""The time tokens: the bins table, the vocabulary that holds them, and records with time through the
tokenizer (model/tokens/time_bins.py, vocab.py, tokenizer.py)."""
from __future__ import annotations

import numpy as np
import pytest

from promptehr.model.patient import Patient
from promptehr.model.tokens import time_bins
from promptehr.model.tokens.tokenizer import Tokenizer
from promptehr.model.tokens.vocab import TimeTokens, Vocabulary


def test_the_bins_are_days_then_weeks_then_months_then_years():
    e = np.asarray(time_bins.EDGES)
    widths = np.diff(e)
    assert e[0] == 0 and (widths > 0).all()
    assert list(e[:15]) == list(range(15))  # one bin per day in the first two weeks
    assert set(widths[14:25]) == {7} and e[25] == 91  # weeks to 3 months
    assert set(widths[25:46]) <= {29, 30, 31} and e[46] == 730  # months to 2 years
    assert set(widths[46:54]) <= {365, 366} and e[54] == 3652  # years to 10 years
    assert time_bins.N_BINS == 55 and e[-1] == 7305


def test_a_day_count_comes_back_inside_its_bin():
    days = np.arange(0, 8000)
    bins = time_bins.bin_of(days)
    assert bins[-1] == time_bins.N_BINS - 1 and time_bins.clip_count(days) == 8000 - 7305
    rng = np.random.default_rng(0)
    back = time_bins.days_in(bins, rng.random(len(days)))
    assert (time_bins.bin_of(back) == bins).all()
    # the whole bin is reachable: u near 0 gives its first day, u near 1 its last
    assert (time_bins.days_in(bins, np.zeros(len(days))) == np.asarray(time_bins.EDGES)[bins]).all()
    assert (time_bins.days_in(bins, np.full(len(days), 1 - 1e-12)) == np.asarray(time_bins.EDGES)[bins + 1] - 1).all()



def test_a_binned_and_redrawn_stay_stays_close_to_the_real_one(shared_data):
    """The table's floor: real DE-SynPUF stays, binned and drawn back uniformly inside their bins (what a
    perfect model would generate), stay within the KS a real holdout reaches (0.015 on samples 1-6).
    With one-day bins only to 6 days this was 0.043: stays fall steeply inside the second week."""
    from scipy.stats import ks_2samp

    from promptehr.model.data import load_patients

    patients = load_patients(shared_data / "desynpuf-sample" / "1-sample-10000")
    stays = np.array([d for p in patients for d in p.los_days])
    assert len(stays) > 5000
    back = time_bins.days_in(time_bins.bin_of(stays), np.random.default_rng(0).random(len(stays)))
    assert ks_2samp(stays, back).statistic < 0.015
    old = (0, 1, 2, 3, 4, 5, 6, *range(7, 91, 7), *time_bins.EDGES[25:])
    back_old = time_bins.days_in(time_bins.bin_of(stays, old), np.random.default_rng(0).random(len(stays)), old)
    assert ks_2samp(stays, back_old).statistic > 0.03

PATIENTS = [
    Patient("a", 50, "F", [["4019", "25000"], ["4280"], ["4019"]], visit_days=[0, 41, 41], los_days=[3, 0, 400]),
    Patient("b", 61, "M", [["4280", "5849"]], visit_days=[0], los_days=[12]),
]


def test_the_training_data_decides_which_time_tokens_a_model_gets():
    assert TimeTokens.of(PATIENTS)[0] == TimeTokens()
    no_end = [Patient(p.id, p.age, p.sex, p.visits, visit_days=p.visit_days) for p in PATIENTS]
    t, why = TimeTokens.of(no_end)
    assert t == TimeTokens(gaps=True, stays=False) and "2 of 2" in why
    undated = [PATIENTS[0], Patient("c", 40, "F", [["4019"]])]
    t, why = TimeTokens.of(undated)
    assert t is None and "1 of 2 training patients have no visit dates" in why


def test_a_vocabulary_with_time_puts_its_tokens_after_the_specials_and_round_trips():
    plain = Vocabulary.build(PATIENTS)
    timed = Vocabulary.build(PATIENTS, time=TimeTokens())
    n = time_bins.N_BINS
    assert timed.category_offset == plain.category_offset + 2 * n
    assert timed.tokens[7] == "<gap 0d>" and timed.tokens[7 + n] == "<stay 0d>" and timed.tokens[7 + 14] == "<gap 14-20d>"
    assert timed.tokens[timed.category_offset:] == plain.tokens[plain.category_offset:]
    assert "time" not in plain.to_dict() and timed.to_dict()["time"]["edges"] == list(time_bins.EDGES)
    assert Vocabulary.from_dict(timed.to_dict()) == timed
    gaps_only = Vocabulary.build(PATIENTS, time=TimeTokens(stays=False))
    assert gaps_only.n_gaps == n and gaps_only.n_stays == 0 and Vocabulary.from_dict(gaps_only.to_dict()) == gaps_only


def test_a_record_with_time_encodes_gaps_before_later_visits_and_stays_at_each_visit_end():
    vocab = Vocabulary.build(PATIENTS, time=TimeTokens())
    tk = Tokenizer(vocab)
    ids = tk.encode_patient(PATIENTS[0])
    assert [vocab.token_of(i) for i in ids] == [
        "<s>", "<v>", "401", "4019", "250", "25000", "<stay 3d>", "</v>",
        "<gap 35-41d>", "<v>", "428", "4280", "<stay 0d>", "</v>",
        "<gap 0d>", "<v>", "401", "4019", "<stay 396-425d>", "</v>", "</s>"]
    visits, gaps, stays = tk.decode_record(ids)
    assert visits == PATIENTS[0].visits
    assert gaps == [None, time_bins.bin_of(41), 0] and stays == list(time_bins.bin_of([3, 0, 400]))
    # the flat mode writes the same time tokens
    flat = Tokenizer(vocab, "flat")
    assert [vocab.token_of(i) for i in flat.encode_patient(PATIENTS[0])][:6] == ["<s>", "<v>", "4019", "25000", "<stay 3d>", "</v>"]


def test_a_record_cut_to_max_length_loses_its_oldest_visits_and_the_first_kept_loses_its_gap():
    vocab = Vocabulary.build(PATIENTS, time=TimeTokens())
    tk = Tokenizer(vocab)
    ids = tk.encode_patient(PATIENTS[0], max_length=15)
    assert [vocab.token_of(i) for i in ids] == [
        "<s>", "<v>", "428", "4280", "<stay 0d>", "</v>", "<gap 0d>", "<v>", "401", "4019", "<stay 396-425d>", "</v>", "</s>"]
    # one visit alone too long keeps its first codes and its stay
    one = tk.encode_patient(PATIENTS[1], max_length=7)
    assert [vocab.token_of(i) for i in one] == ["<s>", "<v>", "428", "4280", "<stay 12d>", "</v>", "</s>"]


def test_a_model_without_time_tokenizes_as_before_and_one_with_time_needs_the_times():
    plain = Tokenizer(Vocabulary.build(PATIENTS))
    assert [plain.vocab.token_of(i) for i in plain.encode_patient(PATIENTS[0])] == [
        "<s>", "<v>", "401", "4019", "250", "25000", "</v>", "<v>", "428", "4280", "</v>", "<v>", "401", "4019", "</v>", "</s>"]
    timed = Tokenizer(Vocabulary.build(PATIENTS, time=TimeTokens()))
    with pytest.raises(ValueError, match="learned time"):
        timed.encode(PATIENTS[0].visits)


def test_patient_times_are_checked_and_carried_by_the_record_dict():
    p = PATIENTS[0]
    d = p.to_dict()
    assert d["visit_days"] == [0, 41, 41] and d["los_days"] == [3, 0, 400] and "start_date" not in d
    assert Patient.from_dict(d) == p
    assert set(Patient("x", 1, "F", [["4019"]]).to_dict()) == {"patient_id", "age", "sex", "visits"}
    for days, los in (([0, 5], None), ([3], None), ([0, 5, 2], None), (None, [1]), (None, [-1, 0, 0])):
        with pytest.raises(ValueError, match="patient 'a'"):
            Patient("a", 1, "F", [["4019"]] * 3, visit_days=days, los_days=los)
