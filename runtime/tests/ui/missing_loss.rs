// A model must end with a loss.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param w: [D, D];
        let y = x @ w;
    }
}

fn main() {}
