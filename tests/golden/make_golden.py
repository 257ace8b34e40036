#!/usr/bin/env python3
"""Writes the golden reference for tests/unit/test_model_golden.cpp.

An independent float64 PyTorch implementation of Hugging Face's DeepseekV3ForCausalLM math
(transformers/models/deepseek_v3/modeling_deepseek_v3.py), written from its description rather
than copied, run on a tiny random model. The weights are drawn in float64, rounded to float32 and
stored; the reference then computes in float64 from those float32 values, so it is the more exact
side of the comparison with the C++ float32 model.

Differences from a literal HF call, on purpose:
  - the loss is the mean cross-entropy of logits[b, t] against an explicit targets[b, t] (HF's
    loss function shifts labels by one; our trainer feeds already shifted targets);
  - everything runs in float64, including the router (HF casts router logits to float32).

Output (commit-size: ~0.2 MB):
  deepseek_v3_tiny.json  header: HF config, ids, targets, loss, and for each tensor its shape and
                         element offset into the blob; per MoE layer the router's chosen experts
  deepseek_v3_tiny.bin   little-endian float32 blob: parameters, gradients, logits [B, T, V], and
                         per MoE layer the router input [N, D] and combine weights [N, K]

Multi-token prediction (DeepSeek-V3 report, section 2.2): the same run also writes
deepseek_v3_tiny_mtp.{json,bin} for a model with num_nextn_predict_layers = 2 (MTP_CFG below):
module k is HF layer L+k-1 with enorm, hnorm, eh_proj, shared_head.norm and a decoder block; it
reads cat[enorm(embed(t_{i+k})), hnorm(h^{k-1}_i)] (the order of vLLM's deepseek_mtp.py) and its
logits, through the shared lm_head, predict targets[:, k:]. The shared embedding and head are
stored once (model.embed_tokens, lm_head), not as the release's per-module copies. Its header adds
"mtp_losses" [L_1..L_D] and "mtp_loss_weight" λ; "loss" stays the main model's, and the gradients
are those of loss + λ/D · Σ_k L_k.

Run: /usr/bin/python3 tests/golden/make_golden.py   (Debian python3-torch, CPU, ~1 s)
"""
import json
import math
import os

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "deepseek_v3_tiny"
DT = torch.float64

# Hugging Face DeepseekV3Config field names.
CFG = dict(
    vocab_size=40, hidden_size=24, intermediate_size=32, moe_intermediate_size=10,
    num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=3,
    q_lora_rank=16, kv_lora_rank=12, qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=8,
    n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=3, n_group=4, topk_group=2,
    routed_scaling_factor=2.5, norm_topk_prob=True, scoring_func="sigmoid", hidden_act="silu",
    rope_theta=10000.0, rope_interleave=True, rms_norm_eps=1e-6, tie_word_embeddings=False,
)
B, T = 2, 7
INIT_STD = 0.2
SEED = 20250
# The MTP variant: 2 main layers (1 dense) and 2 MTP modules, both MoE as in DeepSeek-V3.
MTP_CFG = dict(CFG, num_hidden_layers=2, num_nextn_predict_layers=2)
MTP_LAMBDA = 0.3
MTP_SEED = 20252


# ---- parameters -------------------------------------------------------------------------------

def param_shapes(c):
    """Every parameter (and the router bias buffer) by its HF name, in HF module order."""
    D, H = c["hidden_size"], c["num_attention_heads"]
    d = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], D)}

    def mlp(prefix, inter):
        shapes[prefix + ".gate_proj.weight"] = (inter, D)
        shapes[prefix + ".up_proj.weight"] = (inter, D)
        shapes[prefix + ".down_proj.weight"] = (D, inter)

    L = c["num_hidden_layers"]
    for l in range(L + c.get("num_nextn_predict_layers", 0)):
        p = f"model.layers.{l}"
        if l >= L:  # an MTP module (its shared embedding and head are the main model's)
            shapes[p + ".enorm.weight"] = (D,)
            shapes[p + ".hnorm.weight"] = (D,)
            shapes[p + ".eh_proj.weight"] = (D, 2 * D)
            shapes[p + ".shared_head.norm.weight"] = (D,)
        a = p + ".self_attn"
        shapes[a + ".q_a_proj.weight"] = (c["q_lora_rank"], D)
        shapes[a + ".q_a_layernorm.weight"] = (c["q_lora_rank"],)
        shapes[a + ".q_b_proj.weight"] = (H * d, c["q_lora_rank"])
        shapes[a + ".kv_a_proj_with_mqa.weight"] = (c["kv_lora_rank"] + c["qk_rope_head_dim"], D)
        shapes[a + ".kv_a_layernorm.weight"] = (c["kv_lora_rank"],)
        shapes[a + ".kv_b_proj.weight"] = (H * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"])
        shapes[a + ".o_proj.weight"] = (D, H * c["v_head_dim"])
        if l >= c["first_k_dense_replace"]:
            shapes[p + ".mlp.gate.weight"] = (c["n_routed_experts"], D)
            shapes[p + ".mlp.gate.e_score_correction_bias"] = (c["n_routed_experts"],)
            for e in range(c["n_routed_experts"]):
                mlp(f"{p}.mlp.experts.{e}", c["moe_intermediate_size"])
            mlp(p + ".mlp.shared_experts", c["moe_intermediate_size"] * c["n_shared_experts"])
        else:
            mlp(p + ".mlp", c["intermediate_size"])
        shapes[p + ".input_layernorm.weight"] = (D,)
        shapes[p + ".post_attention_layernorm.weight"] = (D,)
    shapes["model.norm.weight"] = (D,)
    shapes["lm_head.weight"] = (c["vocab_size"], D)
    return shapes


def make_params(c, gen):
    """Random weights rounded to float32: matrices N(0, INIT_STD), norms 1 + N(0, 0.1), router bias
    N(0, 0.05) (non-zero, so it changes some choices)."""
    params = {}
    for name, shape in param_shapes(c).items():
        z = torch.randn(shape, generator=gen, dtype=DT)
        if name.endswith("e_score_correction_bias"):
            v = 0.05 * z
        elif name.endswith("norm.weight"):
            v = 1.0 + 0.1 * z
        else:
            v = INIT_STD * z
        params[name] = v.to(torch.float32).to(DT)
    return params


# ---- model ------------------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def swiglu_mlp(P, prefix, x):
    g = x @ P[prefix + ".gate_proj.weight"].T
    u = x @ P[prefix + ".up_proj.weight"].T
    return (F.silu(g) * u) @ P[prefix + ".down_proj.weight"].T


def rope_cos_sin(c, T_):
    """cos, sin [T, R]: angles pos * theta^(-2i/R) repeated for both halves."""
    R = c["qk_rope_head_dim"]
    inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, R, 2, dtype=DT) / R))
    ang = torch.arange(T_, dtype=DT)[:, None] * inv_freq[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def rope_interleaved(x, cos, sin):
    """rope_interleave=True: pairs (0,1),(2,3).. are first split into [evens | odds], then the
    halves are rotated: out = x' cos + [-x'_2, x'_1] sin."""
    R = x.shape[-1]
    x = x.reshape(*x.shape[:-1], R // 2, 2).transpose(-1, -2).reshape(*x.shape[:-1], R)
    h = R // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], dim=-1)
    return x * cos + rot * sin


def mla(P, prefix, c, x, cos, sin):
    """x [B, T, D] -> [B, T, D]; multi-head latent attention, naive form."""
    Bn, Tn, _ = x.shape
    H, nope, R, V = c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    L, eps = c["kv_lora_rank"], c["rms_norm_eps"]
    qa = rms_norm(x @ P[prefix + ".q_a_proj.weight"].T, P[prefix + ".q_a_layernorm.weight"], eps)
    q = (qa @ P[prefix + ".q_b_proj.weight"].T).view(Bn, Tn, H, nope + R).transpose(1, 2)  # [B,H,T,d]
    q_nope, q_rot = q[..., :nope], q[..., nope:]
    ckv = x @ P[prefix + ".kv_a_proj_with_mqa.weight"].T                                 # [B,T,L+R]
    kv_c, k_rot = ckv[..., :L], ckv[..., L:]
    kv = rms_norm(kv_c, P[prefix + ".kv_a_layernorm.weight"], eps) @ P[prefix + ".kv_b_proj.weight"].T
    kv = kv.view(Bn, Tn, H, nope + V).transpose(1, 2)                                    # [B,H,T,nope+v]
    k_nope, v = kv[..., :nope], kv[..., nope:]
    q_rot = rope_interleaved(q_rot, cos, sin)
    k_rot = rope_interleaved(k_rot.unsqueeze(1), cos, sin).expand(Bn, H, Tn, R)          # shared by heads
    qf = torch.cat([q_nope, q_rot], dim=-1)
    kf = torch.cat([k_nope, k_rot], dim=-1)
    s = (qf @ kf.transpose(-1, -2)) * (nope + R) ** -0.5
    causal = torch.ones(Tn, Tn, dtype=torch.bool).tril()
    s = s.masked_fill(~causal, -math.inf)
    o = torch.softmax(s, dim=-1) @ v                                                     # [B,H,T,v]
    o = o.transpose(1, 2).reshape(Bn, Tn, H * V)
    return o @ P[prefix + ".o_proj.weight"].T


def route(P, prefix, c, x):
    """x [N, D] -> chosen experts idx [N, K], combine weights [N, K] (differentiable through the
    sigmoid scores only), plus margins that tell how robust the choice is to round-off."""
    E, K, G, Gk = c["n_routed_experts"], c["num_experts_per_tok"], c["n_group"], c["topk_group"]
    scores = torch.sigmoid(x @ P[prefix + ".weight"].T)                                   # [N, E]
    with torch.no_grad():
        choice = scores + P[prefix + ".e_score_correction_bias"][None, :]
        gsc = choice.view(-1, G, E // G).topk(2, dim=-1).values.sum(-1)                   # [N, G]
        gsorted = gsc.sort(dim=-1, descending=True).values
        gidx = gsc.topk(Gk, dim=-1).indices
        gmask = torch.zeros_like(gsc, dtype=torch.bool).scatter_(1, gidx, True)
        emask = gmask.repeat_interleave(E // G, dim=1)
        masked = choice.masked_fill(~emask, 0.0)                                          # zero, not -inf
        idx = masked.topk(K, dim=-1).indices
        csorted = masked.sort(dim=-1, descending=True).values
        margin = min((gsorted[:, Gk - 1] - gsorted[:, Gk]).min().item(),
                     (csorted[:, K - 1] - csorted[:, K]).min().item())
        # How often the group limit and the bias change the choice (the golden must exercise both).
        unlimited = choice.topk(K, dim=-1).indices.sort(-1).values
        nobias = scores.masked_fill(~emask, 0.0).topk(K, dim=-1).indices.sort(-1).values
        sidx = idx.sort(-1).values
        group_changed = int((unlimited != sidx).any(-1).sum())
        bias_changed = int((nobias != sidx).any(-1).sum())
        assert bool((masked.gather(1, idx) > 0).all()), "a zeroed expert was chosen: ambiguous ties"
    w = scores.gather(1, idx)
    w = w / (w.sum(-1, keepdim=True) + 1e-20) * c["routed_scaling_factor"]
    return idx, w, dict(margin=margin, group_changed=group_changed, bias_changed=bias_changed)


def moe(P, prefix, c, x):
    """x [B, T, D]: shared expert + sum_k w_k expert_{idx_k}(x)."""
    D = x.shape[-1]
    xf = x.reshape(-1, D)
    idx, w, info = route(P, prefix + ".gate", c, xf)
    y = torch.zeros_like(xf)
    for e in range(c["n_routed_experts"]):
        tok, slot = (idx == e).nonzero(as_tuple=True)
        if tok.numel():
            y = y.index_add(0, tok, swiglu_mlp(P, f"{prefix}.experts.{e}", xf[tok]) * w[tok, slot, None])
    y = y + swiglu_mlp(P, prefix + ".shared_experts", xf)
    return y.view_as(x), dict(input=xf, idx=idx, weights=w, **info)


def decoder_layer(P, c, l, x, routing):
    eps = c["rms_norm_eps"]
    cos, sin = rope_cos_sin(c, x.shape[1])
    p = f"model.layers.{l}"
    x = x + mla(P, p + ".self_attn", c, rms_norm(x, P[p + ".input_layernorm.weight"], eps), cos, sin)
    h = rms_norm(x, P[p + ".post_attention_layernorm.weight"], eps)
    if l >= c["first_k_dense_replace"]:
        y, routing[l] = moe(P, p + ".mlp", c, h)
    else:
        y = swiglu_mlp(P, p + ".mlp", h)
    return x + y


def forward(P, c, ids, hidden=None):
    """Logits [B, T, V] and the routing; hidden (a list) receives the last layer's output."""
    x = P["model.embed_tokens.weight"][ids]
    routing = {}
    for l in range(c["num_hidden_layers"]):
        x = decoder_layer(P, c, l, x, routing)
    if hidden is not None:
        hidden.append(x)
    x = rms_norm(x, P["model.norm.weight"], c["rms_norm_eps"])
    return x @ P["lm_head.weight"].T, routing


def mtp_forward(P, c, ids, h, routing):
    """The MTP modules' logits: module k's [B, T-k, V] at positions i < T-k, predicting t_{i+k+1}."""
    eps, L = c["rms_norm_eps"], c["num_hidden_layers"]
    out = []
    for k in range(1, c["num_nextn_predict_layers"] + 1):
        p = f"model.layers.{L + k - 1}"
        Tk = ids.shape[1] - k
        emb = rms_norm(P["model.embed_tokens.weight"][ids[:, k:]], P[p + ".enorm.weight"], eps)
        hin = rms_norm(h[:, :Tk], P[p + ".hnorm.weight"], eps)
        h = decoder_layer(P, c, L + k - 1, torch.cat([emb, hin], dim=-1) @ P[p + ".eh_proj.weight"].T, routing)
        out.append(rms_norm(h, P[p + ".shared_head.norm.weight"], eps) @ P["lm_head.weight"].T)
    return out


# ---- output -----------------------------------------------------------------------------------

class Blob:
    """Appends float32 tensors to one buffer; entry() records {shape, offset} (offset in elements)."""

    def __init__(self):
        self.parts, self.n = [], 0

    def entry(self, t):
        shape = list(t.shape)
        t = t.detach().to(torch.float32).contiguous().view(-1)
        self.parts.append(t)
        self.n += t.numel()
        return {"shape": shape, "offset": self.n - t.numel()}

    def bytes(self):
        return torch.cat(self.parts).numpy().astype("<f4").tobytes()


def write(name, c, seed):
    gen = torch.Generator().manual_seed(seed)
    P = make_params(c, gen)
    for n, t in P.items():
        t.requires_grad_(not n.endswith("e_score_correction_bias"))
    ids = torch.randint(0, c["vocab_size"], (B, T), generator=gen)
    targets = torch.randint(0, c["vocab_size"], (B, T), generator=gen)

    hidden = []
    logits, routing = forward(P, c, ids, hidden)
    loss = F.cross_entropy(logits.reshape(-1, c["vocab_size"]), targets.reshape(-1))
    depth = c.get("num_nextn_predict_layers", 0)
    mtp_losses = [F.cross_entropy(lk.reshape(-1, c["vocab_size"]), targets[:, k + 1:].reshape(-1))
                  for k, lk in enumerate(mtp_forward(P, c, ids, hidden[0], routing))] if depth else []
    total = loss + MTP_LAMBDA / depth * sum(mtp_losses) if depth else loss
    total.backward()

    for l, r in routing.items():
        # f32 vs f64 round-off (~1e-6) must not flip a choice; the case must exercise the group
        # limit and the bias.
        assert r["margin"] > 1e-4, f"layer {l}: routing margin {r['margin']:.2e} too small, change SEED"
        assert r["group_changed"] > 0 and r["bias_changed"] > 0, f"layer {l}: {r}"

    blob = Blob()
    header = {
        "about": "tests/golden/make_golden.py: float64 reference of HF DeepseekV3ForCausalLM",
        "config": c, "batch": B, "seq": T,
        "ids": ids.view(-1).tolist(), "targets": targets.view(-1).tolist(),
        "loss": loss.item(),
        **({"mtp_losses": [x.item() for x in mtp_losses], "mtp_loss_weight": MTP_LAMBDA} if depth else {}),
        "logits": blob.entry(logits),
        "params": {n: blob.entry(t) for n, t in P.items()},
        "grads": {n: blob.entry(t.grad if t.grad is not None else torch.zeros_like(t)) for n, t in P.items()},
        "moe_layers": [
            {"layer": l, "input": blob.entry(r["input"]), "weights": blob.entry(r["weights"]),
             "idx": r["idx"].tolist(), "margin": r["margin"],
             "tokens_where_group_limit_changes_choice": r["group_changed"],
             "tokens_where_bias_changes_choice": r["bias_changed"]}
            for l, r in sorted(routing.items())
        ],
    }
    with open(os.path.join(HERE, name + ".bin"), "wb") as f:
        f.write(blob.bytes())
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        json.dump(header, f, indent=1)
        f.write("\n")
    print(f"{name}: loss {loss.item():.10f}, mtp {[round(x.item(), 6) for x in mtp_losses]}, {blob.n} floats, routing",
          {l: (round(r['margin'], 5), r['group_changed'], r['bias_changed']) for l, r in routing.items()})


def main():
    write(NAME, CFG, SEED)
    write(NAME + "_mtp", MTP_CFG, MTP_SEED)


if __name__ == "__main__":
    main()
