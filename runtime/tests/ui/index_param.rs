// A trained parameter cannot hold indices: they have no gradient.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param w: [D, D];
        param ids: index[N];
        loss sum(x @ w);
    }
}

fn main() {}
