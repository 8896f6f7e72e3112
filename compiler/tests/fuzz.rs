//! The compiler never panics on model text: 100,000+ token streams, random ones and
//! mutations of valid models (tokens deleted, duplicated, swapped, replaced), go
//! through `adjoint_compiler::expand` (parse, lower, differentiate, generate); each must
//! return, with code or with errors.

use std::panic::{AssertUnwindSafe, catch_unwind};

use proc_macro2::{Delimiter, TokenStream, TokenTree};

const SEEDS: &[&str] = &[
    include_str!("../../tests/models/gpt.adj"),
    "model Linear { dims N, D; input x: [N, D]; input y: [N]; param w: [D] as W;
       loss mean((reshape(x @ reshape(w, [D, 1]), [N]) - y) * (reshape(x @ reshape(w, [D, 1]), [N]) - y)); }",
    "model Head { dims N, D, V; input h: [N, D]; input t: index[N]; param w: [D, V] = normal(0.1);
       param b: [V] = zeros; loss cross_entropy(h @ w + b, t); }",
    "model Mlp { dims N, D, F, L; input x: [N, D]; input t: index[N];
       fn ff(x) { param w1: [D, F]; param w2: [F, D]; x + relu(x @ w1) @ w2 }
       let x = x; for h in 0..L { x = ff(x); } param u: [D, D];
       loss cross_entropy(softmax(x @ u) * 2.0 - 1 / (1 + exp(-x @ u)), t); }",
];

const POOL: &[&str] = &[
    "model",
    "M",
    "dims",
    "dim",
    "input",
    "param",
    "index",
    "fn",
    "let",
    "for",
    "in",
    "loss",
    "x",
    "w",
    "D",
    "N",
    "T",
    "L",
    "H",
    "0",
    "1",
    "2",
    "0.5",
    "1e9",
    "99999999999",
    "+",
    "-",
    "*",
    "/",
    "@",
    "=",
    ";",
    ",",
    ":",
    ".",
    "..",
    "as",
    "softmax",
    "layernorm",
    "gelu",
    "reshape",
    "causal_attention",
    "heads",
    "seq",
    "sum",
    "mean",
    "embed",
    "cross_entropy",
    "\"s\"",
    "T",
    "zeros",
    "normal",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens as text, groups flattened into their delimiters.
fn atoms(ts: TokenStream, out: &mut Vec<String>) {
    for tt in ts {
        match tt {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::None => ("", ""),
                };
                out.push(open.into());
                atoms(g.stream(), out);
                out.push(close.into());
            }
            other => out.push(other.to_string()),
        }
    }
}

/// Joins atoms, dropping unmatched closers and closing what is left open.
fn balanced(atoms: &[String]) -> String {
    let mut stack = Vec::new();
    let mut out = Vec::new();
    for a in atoms {
        match a.as_str() {
            "(" | "[" | "{" => {
                stack.push(match a.as_str() {
                    "(" => ")",
                    "[" => "]",
                    _ => "}",
                });
                out.push(a.clone());
            }
            ")" | "]" | "}" => {
                if stack.last() == Some(&a.as_str()) {
                    stack.pop();
                    out.push(a.clone());
                }
            }
            _ => out.push(a.clone()),
        }
    }
    while let Some(c) = stack.pop() {
        out.push(c.to_string());
    }
    out.join(" ")
}

fn mutate(rng: &mut Rng, base: &[String]) -> Vec<String> {
    let mut a = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(a.len());
        match rng.below(5) {
            0 if !a.is_empty() => {
                a.remove(i);
            }
            1 if !a.is_empty() => {
                let t = a[i].clone();
                a.insert(i, t);
            }
            2 if !a.is_empty() => {
                let j = rng.below(a.len());
                a.swap(i, j);
            }
            3 if !a.is_empty() => a[i] = POOL[rng.below(POOL.len())].to_string(),
            _ => a.insert(i.min(a.len()), POOL[rng.below(POOL.len())].to_string()),
        }
    }
    a
}

#[test]
fn the_compiler_never_panics() {
    let bases: Vec<Vec<String>> = SEEDS
        .iter()
        .map(|s| {
            let mut v = Vec::new();
            atoms(s.parse().unwrap(), &mut v);
            v
        })
        .collect();
    // Every seed is a valid model.
    for s in SEEDS {
        let c = adjoint_compiler::compile(s.parse().unwrap());
        assert!(c.is_ok(), "seed does not compile: {}", s);
    }
    let mut rng = Rng(2026);
    let (mut fed, mut ok) = (0usize, 0usize);
    while fed < 100_000 {
        let atoms = if rng.below(10) == 0 {
            (0..1 + rng.below(40)).map(|_| POOL[rng.below(POOL.len())].to_string()).collect()
        } else {
            // The GPT is large and slow to compile when a mutation leaves it valid; the
            // small seeds get most of the mutations.
            let pick = if rng.below(20) == 0 { 0 } else { 1 + rng.below(SEEDS.len() - 1) };
            mutate(&mut rng, &bases[pick])
        };
        let text = balanced(&atoms);
        let Ok(tokens) = text.parse::<TokenStream>() else { continue };
        fed += 1;
        let result = catch_unwind(AssertUnwindSafe(|| adjoint_compiler::compile(tokens)));
        match result {
            Ok(r) => ok += usize::from(r.is_ok()),
            Err(_) => panic!("the compiler panicked on:\n{text}"),
        }
    }
    // Some mutations keep the model valid; most do not. Both paths were exercised.
    assert!(ok > 100 && ok < fed, "{ok} of {fed} compiled");
}
