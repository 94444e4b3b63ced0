"""Vocabulary: BART-ordered specials, sorted categories then codes, code <-> category structure, JSON."""
import numpy as np
import pytest

from promptehr.model.patient import Patient
from promptehr.model.tokens.vocab import SPECIALS, UNK, Vocabulary

CODES = ["4019", "25000", "4280", "42731", "5849", "V5861", "E8889", "2724", "41401", "5990", "4011", "E8790"]


def toy_patients(n: int = 8, seed: int = 0, codes=CODES) -> list[Patient]:
    """Small random records over a fixed code set (shared by the model tests)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        visits = []
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(1, 5))
            visits.append([codes[j] for j in rng.choice(len(codes), size=k, replace=False)])
        out.append(Patient(str(i), float(rng.integers(20, 90)), "MF"[i % 2], visits))
    return out


def test_layout_and_lookups():
    v = Vocabulary.build(toy_patients(30))
    assert v.tokens[:7] == list(SPECIALS) and v.id_of("<s>") == 0 and v.id_of("<pad>") == 1 and v.id_of("<mask>") == 6
    assert v.category_offset == 7 and v.code_offset == 7 + v.n_categories and len(v) == v.code_offset + v.n_codes
    assert v.categories == sorted(v.categories) and v.codes == sorted(v.codes)
    assert "E888" in v.categories and "401" in v.categories  # E codes: 4 characters
    for code in v.codes:
        tid = v.id_of(code)
        assert v.token_of(tid) == code and v.is_code(tid)
        k = v.category_token_of(tid)
        assert v.token_of(k) == code[:4 if code.startswith("E") else 3]
        assert tid in v.category_codes[k]
    k401 = v.id_of("401")
    assert sorted(v.token_of(t) for t in v.category_codes[k401]) == ["4011", "4019"]
    assert v.code_category.shape == (v.n_codes,)
    assert v.id_of("99999") == UNK


def test_min_count_maps_rare_codes_to_category():
    ps = [Patient("a", 50, "F", [["4019", "4011"], ["4019"]]), Patient("b", 60, "M", [["25000"]])]
    v = Vocabulary.build(ps, min_count=2)
    assert v.codes == ["4019"] and v.categories == ["401"]
    assert v.code_token_for("4011") == (v.id_of("401"), UNK)  # rare code, known category
    assert v.code_token_for("25000") == (UNK, UNK)  # category absent too
    assert int(v.code_counts[0]) == 2


def test_json_round_trip(tmp_path):
    v = Vocabulary.build(toy_patients(30))
    v.save(tmp_path / "vocab.json")
    w = Vocabulary.load(tmp_path / "vocab.json")
    assert w == v and w.tokens == v.tokens and np.array_equal(w.code_category, v.code_category)


def test_icd9_vocabulary_json_has_no_systems_field(tmp_path):
    """An ICD-9 vocabulary is written exactly as before the code systems, and loads as ICD-9-CM."""
    v = Vocabulary.build(toy_patients(30))
    assert v.code_systems == ("icd9",) and "code_systems" not in v.to_dict()
    assert set(v.to_dict()) == {"version", "specials", "min_count", "categories", "codes", "code_counts"}
    assert Vocabulary([], []).code_systems == ("icd9",)


def test_mixed_systems_are_separate_tokens_and_recorded(tmp_path):
    ps = [Patient("a", 50, "F", [["E8809", "icd10:E8809", "4019"], ["icd10:I10", "icd10:E8881"]]),
          Patient("b", 60, "M", [["E8881", "icd10:E119"]])]
    v = Vocabulary.build(ps)
    assert v.code_systems == ("icd9", "icd10")
    assert v.categories == ["401", "E880", "E888", "icd10:E11", "icd10:E88", "icd10:I10"]
    assert v.code_id("E8809") != v.code_id("icd10:E8809") and v.id_of("E8809") != v.id_of("icd10:E8809")
    assert v.token_of(v.category_token_of(v.code_id("icd10:E8881"))) == "icd10:E88"
    assert v.code_token_for("icd10:E8899") == (v.id_of("icd10:E88"), UNK)  # unseen code, seen category
    assert v.code_token_for("E8899") == (UNK, UNK)  # the ICD-9 category E889 is not in the vocabulary
    # Each category's codes are contiguous (the sampler's windows rely on it).
    for ids in v.category_codes.values():
        assert list(ids) == list(range(ids[0], ids[-1] + 1))
    v.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == v and v.to_dict()["code_systems"] == ["icd9", "icd10"]
    ten = Vocabulary.build([Patient("c", 40, "F", [["icd10:I10"]])])
    assert ten.code_systems == ("icd10",) and ten.to_dict()["code_systems"] == ["icd10"]


def test_a_systems_field_that_disagrees_with_the_codes_is_refused():
    d = Vocabulary.build(toy_patients(5)).to_dict()
    d["code_systems"] = ["icd10"]
    with pytest.raises(ValueError, match=r"code systems \['icd10'\] but its codes are \['icd9'\]"):
        Vocabulary.from_dict(d)
