"""PromptBart: prompts matter and get gradients, the KV-cache decode equals the full forward, an empty
encoder works, and a tiny model overfits 8 patients to exact reconstruction."""
import pytest
import torch

from promptehr.model.training.batches import collate
from promptehr.model.nn.config import model_config
from promptehr.model.training.corruption import Example
from promptehr.model.nn.promptbart import PromptBart, demographics_to_tensors
from promptehr.model.tokens.tokenizer import Tokenizer
from promptehr.model.tokens.vocab import BOS, EOS, Vocabulary
from tests.test_vocab import toy_patients

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: torch on one thread


def tiny(vocab, **kw):
    torch.manual_seed(0)
    kw = {"age_mean": 55.0, "age_sd": 20.0, **kw}  # standardised ages, as training sets them
    return PromptBart(model_config("tiny", vocab_size=len(vocab), code_offset=vocab.code_offset, **kw))


def batch_of(patients, tk, cfg, identity=True):
    seqs = [tk.encode(p.visits) for p in patients]
    ex = [Example(s if identity else [BOS, EOS], s, [False] * len(s)) for s in seqs]
    age, sex = demographics_to_tensors([p.age for p in patients], [p.sex for p in patients], cfg)
    return collate(ex, age.numpy(), sex.numpy())


def test_demographics_to_tensors():
    cfg = model_config("tiny", age_mean=60.0, age_sd=10.0)
    age, sex = demographics_to_tensors([70, 50], ["F", "M"], cfg)
    assert age.tolist() == [1.0, -1.0] and sex.tolist() == [1, 0] and sex.dtype == torch.long
    with pytest.raises(ValueError):
        demographics_to_tensors([1], ["X"], cfg)


def test_prompts_change_output_and_get_gradients():
    ps = toy_patients(4)
    v = Vocabulary.build(ps)
    m = tiny(v).eval()
    tk = Tokenizer(v)
    b = batch_of(ps, tk, m.config)
    inputs = b.model_inputs()
    base = m(**inputs).logits
    assert base.shape == (4, b.decoder_input_ids.shape[1], len(v))  # prompt positions dropped
    older = m(**{**inputs, "age": inputs["age"] + 1.0}).logits
    other_sex = m(**{**inputs, "sex": 1 - inputs["sex"]}).logits
    assert (base - older).abs().max() > 1e-4 and (base - other_sex).abs().max() > 1e-4
    m.train()
    m(**inputs).loss.backward()
    for net in (m.encoder_prompt, m.decoder_prompt):
        for part in (net.age, net.sex):
            grads = [p.grad for p in part.parameters()]
            assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_cached_decode_matches_forward_and_select_drops_rows():
    ps = toy_patients(3)
    v = Vocabulary.build(ps)
    m = tiny(v).eval()
    b = batch_of(ps, Tokenizer(v), m.config)
    with torch.no_grad():
        full = m(**{**b.model_inputs(), "labels": None}).logits
        state = m.encode(b.input_ids, b.attention_mask, b.age, b.sex)
        assert state.hidden.shape[:2] == (3, m.n_prompts + b.input_ids.shape[1])
        # the shortest row bounds the steps without padding in the decoder
        n = int(b.decoder_attention_mask.sum(1).min())
        logits, past = m.decode(b.decoder_input_ids[:, :2], state, b.age, b.sex)
        steps = [logits]
        for t in range(2, n):
            logits, past = m.decode(b.decoder_input_ids[:, t:t + 1], state, b.age, b.sex, past)
            steps.append(logits)
        assert torch.allclose(torch.cat(steps, 1), full[:, :n], atol=1e-4)
        keep = torch.tensor([2, 0])
        past, state2 = m.select(past, state, keep)
        logits, past = m.decode(b.decoder_input_ids[keep, n:n + 1], state2, b.age[keep], b.sex[keep], past)
        assert logits.shape == (2, 1, len(v))


def test_empty_encoder_input():
    ps = toy_patients(2)
    v = Vocabulary.build(ps)
    m = tiny(v).eval()
    age, sex = demographics_to_tensors([40, 80], ["F", "M"], m.config)
    with torch.no_grad():
        for ids in (torch.zeros(2, 0, dtype=torch.long), torch.tensor([[BOS, EOS]] * 2)):
            state = m.encode(ids, None, age, sex)
            logits, _ = m.decode(torch.tensor([[BOS], [BOS]]), state, age, sex)
            assert logits.shape == (2, 1, len(v)) and torch.isfinite(logits).all()


def greedy(m, b, max_len=60):
    state = m.encode(b.input_ids, b.attention_mask, b.age, b.sex)
    out = torch.full((len(b.age), 1), BOS)
    logits, past = m.decode(out, state, b.age, b.sex)
    for _ in range(max_len):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], 1)
        if (out == EOS).any(1).all():
            break
        logits, past = m.decode(nxt, state, b.age, b.sex, past)
    return out


def test_tiny_model_overfits_eight_patients():
    ps = toy_patients(8, seed=1)
    v = Vocabulary.build(ps)
    m = tiny(v, dropout=0.0)
    tk = Tokenizer(v)
    b = batch_of(ps, tk, m.config)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(120):
        loss = m(**b.model_inputs()).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(m(**b.model_inputs()).lm_loss) < 0.05
    m.eval()
    with torch.no_grad():
        out = greedy(m, b)
    assert [tk.decode(row.tolist()[1:]) for row in out] == [p.visits for p in ps]


def test_padded_empty_row_equals_zero_token_encoder():
    ps = toy_patients(2)
    v = Vocabulary.build(ps)
    m = tiny(v).eval()
    tk = Tokenizer(v)
    seqs = [tk.encode(p.visits) for p in ps]
    age, sex = demographics_to_tensors([p.age for p in ps], [p.sex for p in ps], m.config)
    b = collate([Example([], seqs[0], [False] * len(seqs[0])), Example(seqs[1], seqs[1], [False] * len(seqs[1]))],
                age.numpy(), sex.numpy())  # row 0: empty encoder padded to row 1's width
    with torch.no_grad():
        batched = m(**{**b.model_inputs(), "labels": None}).logits[0]
        state = m.encode(torch.zeros(1, 0, dtype=torch.long), None, age[:1], sex[:1])
        alone, _ = m.decode(b.decoder_input_ids[:1], state, age[:1], sex[:1])
    n = int(b.decoder_attention_mask[0].sum())
    assert torch.allclose(batched[:n], alone[0, :n], atol=1e-5)
