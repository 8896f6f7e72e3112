// A repeated block must update the value it carries.
adjoint::model! {
    model M {
        dims N, D, K;
        input x: [N, D];
        param w: [D, D];
        let h = x @ w;
        for l in 0..K {
            let y = h;
        }
        loss sum(h);
    }
}

fn main() {}
