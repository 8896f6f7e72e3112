// Every mistake of one expansion is reported together.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param w: [D, D];
        let a = x @ w2;
        let b = tanhh(x);
        loss sum(x @ w) + sum(b);
    }
}

fn main() {}
