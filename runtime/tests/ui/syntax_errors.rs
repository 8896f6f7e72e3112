// Syntax errors in two statements: the parser recovers and reports both.
adjoint::model! {
    model M {
        dims N, D;
        input x: [N, D];
        param w: [D D];
        let y = x @@ w;
        loss sum(y);
    }
}

fn main() {}
