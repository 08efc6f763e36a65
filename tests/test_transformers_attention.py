"""The torch custom ops with masks, windows and packed batches (eager and under
torch.compile(fullgraph=True)), and the "tilec" transformers attention implementation against
"sdpa" on BertModel and LlamaForCausalLM built from small configs with random weights."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import ops.torch  # noqa: E402,F401  (registers torch.ops.tilec.*)
from ops.attention import reference  # noqa: E402
from ops.attention_varlen import reference as varlen_reference  # noqa: E402


def test_custom_ops_take_masks_windows_and_packed_batches_under_compile():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 9, 16), torch.randn(2, 2, 13, 16), torch.randn(2, 2, 13, 16)
    mask = torch.arange(13)[None, None, None, :] < torch.tensor([13, 5])[:, None, None, None]

    def f(q, k, v, mask):
        return (torch.ops.tilec.attention(q, k, v, True, None, mask, [4, -1]),
                torch.ops.tilec.attention_lse(q, k, v, False, 0.3, mask.logical_not().float() * -1e9, None))

    out, (out2, lse) = torch.compile(f, fullgraph=True)(q, k, v, mask)
    arrays = {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()}
    want = reference({**arrays, "causal": True, "mask": mask.numpy(), "window": (4, -1)})
    torch.testing.assert_close(out.double(), torch.from_numpy(want), rtol=2e-4, atol=3e-5)
    want2, want_lse = reference({**arrays, "scale": 0.3, "mask": mask.numpy()}, return_lse=True)
    torch.testing.assert_close(out2.double(), torch.from_numpy(want2), rtol=2e-4, atol=3e-5)
    torch.testing.assert_close(lse.double(), torch.from_numpy(want_lse), rtol=1e-5, atol=1e-4)

    cu = torch.tensor([0, 3, 10, 16], dtype=torch.int32)
    qp, kp, vp = torch.randn(16, 4, 8), torch.randn(16, 2, 8), torch.randn(16, 2, 8)
    packed = torch.compile(lambda q, k, v, cu: torch.ops.tilec.attention_varlen(q, k, v, cu, cu, 7, 7, True),
                           fullgraph=True)(qp, kp, vp, cu)
    want = varlen_reference(qp.numpy(), kp.numpy(), vp.numpy(), cu.numpy(), cu.numpy(), causal=True)
    torch.testing.assert_close(packed.double(), torch.from_numpy(want), rtol=2e-4, atol=3e-5)


transformers = pytest.importorskip("transformers")
import ops.torch.transformers_attention  # noqa: E402,F401  (registers "tilec")


def _build(cls, config, impl):
    config._attn_implementation = impl
    torch.manual_seed(0)
    return cls(config).eval()


def _compare(cls, config, ids, attention_mask, out_of):
    """(sdpa, tilec eager, tilec compiled, tilec without the padding mask) outputs."""
    got = {}
    for impl in ("sdpa", "tilec"):
        model = _build(cls, config, impl)
        with torch.no_grad():
            got[impl] = out_of(model(input_ids=ids, attention_mask=attention_mask))
            if impl == "tilec":
                got["unmasked"] = out_of(model(input_ids=ids, attention_mask=torch.ones_like(attention_mask)))
                compiled = torch.compile(model, fullgraph=True)
                got["compiled"] = out_of(compiled(input_ids=ids, attention_mask=attention_mask))
    return got


def test_bert_padded_batch_matches_sdpa():
    from transformers import BertConfig, BertModel
    config = BertConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=96, max_position_embeddings=32)
    ids = torch.randint(0, 97, (3, 13), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones(3, 13, dtype=torch.long)
    attention_mask[0, 8:] = 0
    attention_mask[2, 3:] = 0
    got = _compare(BertModel, config, ids, attention_mask, lambda o: o.last_hidden_state)
    keep = attention_mask.bool()
    torch.testing.assert_close(got["tilec"], got["sdpa"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["compiled"], got["sdpa"], rtol=1e-5, atol=1e-5)
    # the padding mask changes real tokens' outputs: an implementation ignoring it fails above
    assert (got["unmasked"][keep] - got["sdpa"][keep]).abs().max() > 1e-3


def test_llama_left_padded_batch_matches_sdpa():
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64)
    ids = torch.randint(0, 97, (3, 11), generator=torch.Generator().manual_seed(2))
    attention_mask = torch.ones(3, 11, dtype=torch.long)
    attention_mask[0, :4] = 0
    attention_mask[1, :1] = 0
    got = _compare(LlamaForCausalLM, config, ids, attention_mask, lambda o: o.logits)
    keep = attention_mask.bool()      # padded positions: every key masked (tilec gives zeros there)
    torch.testing.assert_close(got["tilec"][keep], got["sdpa"][keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["compiled"][keep], got["sdpa"][keep], rtol=1e-5, atol=1e-5)
    assert (got["unmasked"][keep] - got["sdpa"][keep]).abs().max() > 1e-3
    assert torch.isfinite(got["tilec"]).all()


def test_unsupported_arguments_are_refused():
    from ops.torch.transformers_attention import attention_forward
    q = torch.zeros(1, 2, 3, 16)
    with pytest.raises(ValueError, match="dropout"):
        attention_forward(torch.nn.Module(), q, q, q, None, dropout=0.1)
    with pytest.raises(ValueError, match="softcap"):
        attention_forward(torch.nn.Module(), q, q, q, None, softcap=30.0)
