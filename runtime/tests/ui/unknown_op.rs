// An op not in the library, with a suggestion.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param w: [D, D];
        loss sum(sofmax(x @ w));
    }
}

fn main() {}
