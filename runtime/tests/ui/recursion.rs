// A function that calls itself is an error, not a hang.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param w: [D, D];
        fn f(y) { f(y) }
        loss sum(f(x @ w));
    }
}

fn main() {}
