"""PromptBart: prompts matter and get gradients, the KV-cache decode equals the full forward, an empty
encoder works, a tiny model overfits 8 patients to exact reconstruction, and the time weight scales a time
token's bin choice alone."""
import pytest
import torch

from promptehr.model.training.batches import collate
from promptehr.model.nn.config import model_config
from promptehr.model.training.corruption import Example
from promptehr.model.nn.promptbart import LossWeights, PromptBart, demographics_to_tensors
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


@pytest.mark.parametrize("weight, smoothing", [(0.5, 0.0), (0.5, 0.1), (0.2, 0.1)])
def test_time_weight_scales_the_bin_choice_and_keeps_the_kind(weight, smoothing):
    """Ids 7-11 gaps, 12-15 stays. A time label's NLL is -log P(kind) - log P(bin | kind); training counts the
    second part `weight` times (smoothed labels hold 1 - smoothing of it); evaluation is plain NLL."""
    m = PromptBart(model_config("tiny", vocab_size=40, code_offset=30, time_offset=7, n_gaps=5, n_stays=4))
    torch.manual_seed(0)
    logits = torch.randn(12, 40)
    labels = torch.tensor([8, 12, 13, 30, 31, -100, 7, 15, 20, 35, 11, 16])  # 6 time labels, one ignored
    m.loss_weights = LossWeights(age=0, sex=0, cooc=0, label_smoothing=smoothing, time=weight)
    logp = logits.log_softmax(-1)
    expected = []
    for row, label in enumerate(labels.tolist()):
        if label < 0:
            continue
        loss = (1 - smoothing) * -logp[row, label] - smoothing * logp[row].mean()
        for start, n in ((7, 5), (12, 4)):
            if start <= label < start + n:
                bin_nll = torch.logsumexp(logp[row, start:start + n], 0) - logp[row, label]
                loss = loss - (1 - weight) * (1 - smoothing) * bin_nll
        expected.append(loss)
    m.train()
    assert float(m._lm_loss(logits, labels, smoothing)) == pytest.approx(float(torch.stack(expected).mean()), rel=1e-5)
    plain = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100)
    m.eval()
    assert float(m._lm_loss(logits, labels, 0.0)) == pytest.approx(float(plain), rel=1e-6)
    # the kind's total probability gets the same gradient whatever the weight: only the bin's share moves
    m.train()
    grads = {}
    for w in (weight, 1.0):
        m.loss_weights = LossWeights(age=0, sex=0, cooc=0, label_smoothing=0.0, time=w)
        x = logits.clone().requires_grad_(True)
        m._lm_loss(x, labels, 0.0).backward()
        grads[w] = x.grad[1, 12:16].sum()  # row 1's label is a stay: the summed gradient over the stay kind
    assert float(grads[weight]) == pytest.approx(float(grads[1.0]), abs=1e-6)


def test_attention_is_transformers_sdpa_in_float32_and_close_to_it_under_bf16_autocast():
    """model/nn/attention.py: without autocast the very bits of transformers' own SDPA (masks included:
    a padded encoder row and the causal decoder); under CPU bfloat16 autocast, float32 attention beside
    bfloat16 layers: other bits, the same logits to bfloat16's precision."""
    ps = toy_patients(3)
    v = Vocabulary.build(ps)
    m = tiny(v).eval()
    assert m.bart.config._attn_implementation == "promptehr_sdpa"
    tk = Tokenizer(v)
    seqs = [tk.encode(p.visits) for p in ps]
    age, sex = demographics_to_tensors([p.age for p in ps], [p.sex for p in ps], m.config)
    b = collate([Example(s[: 2 + 3 * i], s, [False] * len(s)) for i, s in enumerate(seqs)], age.numpy(), sex.numpy())
    assert not bool(b.attention_mask.all())  # some encoder rows padded

    def logits(impl: str, bf16: bool = False) -> torch.Tensor:
        m.bart.set_attn_implementation(impl)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return m(**{**b.model_inputs(), "labels": None}).logits.float()

    ours, theirs, eager = logits("promptehr_sdpa"), logits("sdpa"), logits("eager")
    assert torch.equal(ours, theirs)
    assert torch.allclose(ours, eager, atol=1e-5)  # the masks are applied: eager builds its own
    low = logits("promptehr_sdpa", bf16=True)
    m.bart.set_attn_implementation("promptehr_sdpa")
    assert not torch.equal(low, ours) and torch.allclose(low, ours, atol=0.1)
