// A parameter the loss does not depend on.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param w: [D, D];
        param unused: [D];
        loss sum(x @ w);
    }
}

fn main() {}
