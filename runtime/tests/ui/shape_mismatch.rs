// Inner dimensions of a matmul differ: both shapes are shown.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param w: [K, D];
        loss sum(x @ w);
    }
}

fn main() {}
