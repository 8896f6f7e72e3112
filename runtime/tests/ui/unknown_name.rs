// A name that was never declared, with a suggestion.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param weight: [D, D];
        loss sum(x @ wieght);
    }
}

fn main() {}
