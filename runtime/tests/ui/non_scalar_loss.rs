// The loss must be a scalar.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param w: [D, D];
        loss x @ w;
    }
}

fn main() {}
