// A misspelt named argument of a library op.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param w: [D, D];
        loss sum(causal_attention(x, x, x @ w, head = 2, seq = N));
    }
}

fn main() {}
