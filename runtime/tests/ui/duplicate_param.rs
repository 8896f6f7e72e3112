// The same parameter declared twice.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param w: [D, D];
        param w: [D, K];
        loss sum(x @ w);
    }
}

fn main() {}
