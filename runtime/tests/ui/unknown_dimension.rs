// A shape names a dimension that was not declared.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param w: [D, Q];
        loss sum(x @ w);
    }
}

fn main() {}
