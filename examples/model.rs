//! The benchmark GPT (`shared/peers/WORKLOAD.md`) written in adjoint's DSL, shared by
//! the `gpt` and `train_gpt` examples.
//!
//! The model text is the same as `tests/models/gpt.adj` (a test checks it), which the
//! `adjoint-tests` crate compiles through `build.rs` instead of the macro.

adjoint::model! {
    /// A GPT-2 style pre-LN decoder, the benchmark model of `shared/peers/WORKLOAD.md`:
    /// learned positions, causal multi-head attention, a GELU MLP, tied embeddings and
    /// mean cross-entropy. Weights are `[in, out]` (y = x W + b). The sizes after `dims`
    /// are representative (the `small` workload), for the simplifier's cost model; the
    /// generated code runs at any sizes.
    model Gpt {
        dims B = 8, T = 128, D = 256, H = 4, F = 1024, V = 2048, L = 4;
        dim N = B * T;

        input tokens: index[B, T];
        input targets: index[B, T];

        param wte: [V, D] = normal(0.02) as E;
        param wpe: [T, D] = normal(0.02) as P;

        fn self_attention(x) {
            param attn.wq: [D, D] as W_q;
            param attn.bq: [D] as b_q;
            param attn.wk: [D, D] as W_k;
            param attn.bk: [D] as b_k;
            param attn.wv: [D, D] as W_v;
            param attn.bv: [D] as b_v;
            param attn.wo: [D, D] as W_o;
            param attn.bo: [D] as b_o;
            let q = x @ attn.wq + attn.bq;
            let k = x @ attn.wk + attn.bk;
            let v = x @ attn.wv + attn.bv;
            causal_attention(q, k, v, heads = H, seq = T) @ attn.wo + attn.bo
        }

        fn mlp(x) {
            param mlp.w1: [D, F] as W_1;
            param mlp.b1: [F] as b_1;
            param mlp.w2: [F, D] as W_2;
            param mlp.b2: [D] as b_2;
            gelu(x @ mlp.w1 + mlp.b1) @ mlp.w2 + mlp.b2
        }

        fn block(x) {
            param ln1.g: [D] = 1 + normal(0.1) as "γ_1";
            param ln1.b: [D] as "β_1";
            param ln2.g: [D] = 1 + normal(0.1) as "γ_2";
            param ln2.b: [D] as "β_2";
            let x = x + self_attention(layernorm(x, ln1.g, ln1.b));
            x + mlp(layernorm(x, ln2.g, ln2.b))
        }

        let x = reshape(wte[tokens] + wpe, [N, D]);
        for h in 0..L {
            x = block(x);
        }
        param lnf.g: [D] = 1 + normal(0.1) as "γ_f";
        param lnf.b: [D] as "β_f";
        let logits = layernorm(x, lnf.g, lnf.b) @ wte.T;
        output logits;
        loss cross_entropy(logits, reshape(targets, [N]));
    }
}
