"""Tokenizer: flat and hierarchical layouts, exact round trip, oldest-first truncation, rare codes."""
import pytest

from promptehr.model.tokens.tokenizer import Tokenizer
from promptehr.model.tokens.vocab import BOS, END_VISIT, EOS, UNK, VISIT, Vocabulary
from tests.test_vocab import toy_patients


@pytest.mark.parametrize("mode", ["hierarchical", "flat"])
def test_round_trip(mode):
    ps = toy_patients(40)
    tk = Tokenizer(Vocabulary.build(ps), mode)
    for p in ps:
        assert tk.decode(tk.encode(p.visits)) == p.visits


def test_layouts():
    ps = toy_patients(40)
    v = Vocabulary.build(ps)
    visits = [["4019", "25000"], ["E8889"]]
    c = v.id_of
    assert Tokenizer(v, "flat").encode(visits) == [BOS, VISIT, c("4019"), c("25000"), END_VISIT, VISIT, c("E8889"), END_VISIT, EOS]
    assert Tokenizer(v, "hierarchical").encode(visits) == [
        BOS, VISIT, c("401"), c("4019"), c("250"), c("25000"), END_VISIT, VISIT, c("E888"), c("E8889"), END_VISIT, EOS]


@pytest.mark.parametrize("mode", ["hierarchical", "flat"])
def test_truncation_drops_oldest_visits(mode):
    v = Vocabulary.build(toy_patients(40))
    tk = Tokenizer(v, mode)
    visits = [["4019"], ["25000", "4280"], ["5849"]]
    full = tk.encode(visits)
    last_two = tk.encode(visits[1:])
    assert tk.encode(visits, max_length=len(full)) == full
    assert tk.encode(visits, max_length=len(full) - 1) == last_two
    assert tk.decode(tk.encode(visits, max_length=len(last_two))) == visits[1:]
    one = tk.encode([["4019", "25000", "4280", "5849"]], max_length=4 + 2 * tk.tokens_per_code)
    assert tk.decode(one) == [["4019", "25000"]] and len(one) <= 4 + 2 * tk.tokens_per_code


def test_out_of_vocabulary_codes():
    v = Vocabulary.build(toy_patients(40))
    h, f = Tokenizer(v, "hierarchical"), Tokenizer(v, "flat")
    ids = h.encode([["4018", "99999"]])  # 4018 unseen but category 401 known; 999 unknown
    assert ids[2:6] == [v.id_of("401"), UNK, UNK, UNK]
    assert h.decode(ids) == [["401"]]
    assert f.encode([["4018"]])[2] == v.id_of("401") and f.decode(f.encode([["4018"]])) == [["401"]]


def test_decode_is_tolerant():
    v = Vocabulary.build(toy_patients(40))
    tk = Tokenizer(v, "flat")
    c = v.id_of
    assert tk.decode([BOS, VISIT, c("4019"), c("4019"), END_VISIT, VISIT, END_VISIT, VISIT, c("5849")]) == [["4019"], ["5849"]]
    assert tk.decode([VISIT, c("4019"), END_VISIT, EOS, VISIT, c("5849"), END_VISIT]) == [["4019"]]
