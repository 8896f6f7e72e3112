// layernorm takes three arguments.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param w: [D, D];
        loss sum(layernorm(x @ w));
    }
}

fn main() {}
