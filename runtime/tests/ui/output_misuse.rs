// `output` names a value of the last stage, once, at the model's top level.
adjoint::model! {
    model M {
        dims N, D, L;
        input x: [N, D];
        param w: [D, D];
        fn f(a) {
            output a;
            a @ w
        }
        let h = x @ w;
        output h;
        for l in 0..L {
            h = f(h);
        }
        let y = h @ w;
        output y;
        output y;
        output y @ w;
        output z;
        loss sum(y);
    }
}

fn main() {}
