//! Test helpers: a deterministic RNG, random feeds, and the finite-difference checker
//! every adjoint is held to.
#![allow(dead_code)]

use std::collections::BTreeMap;

use adjoint_compiler::autodiff;
use adjoint_compiler::dim::DimEnv;
use adjoint_compiler::interp::{Tensor, concrete_shape, evaluate};
use adjoint_compiler::ir::{DType, Graph, ValueId};
use ndarray::ArrayD;

/// SplitMix64: small, seedable, the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Random feeds for every input of `g`: normals for reals (`positive` makes them
/// ≥ 0.5 in magnitude-shifted form, for log/sqrt/div), uniform indices below `index_bound`.
pub fn random_feeds(
    g: &Graph,
    env: &DimEnv,
    rng: &mut Rng,
    positive: &[&str],
    index_bound: &BTreeMap<&str, usize>,
) -> BTreeMap<String, Tensor> {
    let mut feeds = BTreeMap::new();
    for (id, name, _) in g.inputs() {
        let dims = concrete_shape(g.shape(id), env).expect("dims bound");
        let n: usize = dims.iter().product();
        let t = match g.ty(id).dtype {
            DType::F32 => {
                let pos = positive.contains(&name);
                let v: Vec<f64> =
                    (0..n).map(|_| if pos { 0.5 + rng.uniform() * 1.5 } else { rng.normal() }).collect();
                Tensor::Real(ArrayD::from_shape_vec(dims, v).unwrap())
            }
            DType::Index => {
                let bound = index_bound.get(name).copied().unwrap_or(1);
                let v: Vec<i64> = (0..n).map(|_| rng.below(bound) as i64).collect();
                Tensor::Index(ArrayD::from_shape_vec(dims, v).unwrap())
            }
        };
        feeds.insert(name.to_string(), t);
    }
    feeds
}

/// The feeds `g` has inputs for (a rewritten graph may have lost some).
pub fn feeds_of<T: Clone>(g: &Graph, feeds: &BTreeMap<String, T>) -> BTreeMap<String, T> {
    feeds
        .iter()
        .filter(|(name, _)| g.find_input(name).is_some())
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect()
}

/// `max |a − b| / max(max |b|, floor)`: the check_grads.py measure.
pub fn rel_err(a: &ArrayD<f64>, b: &ArrayD<f64>, floor: f64) -> f64 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max).max(floor);
    diff / scale
}

pub fn loss_at(g: &Graph, env: &DimEnv, feeds: &BTreeMap<String, Tensor>, loss: ValueId) -> f64 {
    evaluate(g, env, feeds, &[loss]).unwrap().get(loss).unwrap().scalar().unwrap()
}

/// Checks the symbolic gradient of scalar `loss` with respect to each of `wrt` against
/// central finite differences. `coords`: `None` checks every element; `Some(k)` checks
/// `k` random elements plus the largest-magnitude one per tensor. Returns the worst
/// relative error; panics with the tensor's name if it is over `tol`.
///
/// A tensor's error is `max |fd − symbolic|` over `max |symbolic|`, floored at 1% of the
/// largest gradient among `wrt`: a gradient that is exactly zero (`b_k`: softmax ignores
/// a per-query shift of the scores) is then judged against the model's gradient scale
/// instead of against rounding noise (the same reason check_grads.py has `--floor`).
pub fn check_gradients(
    g: &mut Graph,
    env: &DimEnv,
    feeds: &BTreeMap<String, Tensor>,
    loss: ValueId,
    wrt: &[ValueId],
    coords: Option<usize>,
    tol: f64,
) -> f64 {
    let grads = autodiff::grad(g, loss, wrt).expect("autodiff");
    let values = evaluate(g, env, feeds, &grads).expect("evaluate gradients");
    let h = 1e-5;
    let mut rng = Rng::new(7);
    let mut worst: f64 = 0.0;
    let global_scale = grads
        .iter()
        .map(|&gw| values.get(gw).unwrap().real("grad").unwrap().iter().map(|v| v.abs()).fold(0.0, f64::max))
        .fold(0.0, f64::max);
    for (&w, &gw) in wrt.iter().zip(&grads) {
        let name = g.display_name(w).unwrap().to_string();
        let input_name = match &g.node(w).op {
            adjoint_compiler::ops::Op::Source(adjoint_compiler::ops::Source::Input { name, .. }) => {
                name.clone()
            }
            _ => panic!("wrt must be inputs"),
        };
        let symbolic = values.get(gw).unwrap().real("grad").unwrap().clone();
        let base = feeds[&input_name].real("feed").unwrap().clone();
        let n = base.len();
        let picks: Vec<usize> = match coords {
            None => (0..n).collect(),
            Some(k) => {
                let argmax = symbolic
                    .iter()
                    .enumerate()
                    .fold((0, -1.0), |best, (i, v)| if v.abs() > best.1 { (i, v.abs()) } else { best })
                    .0;
                let mut p: Vec<usize> = (0..k).map(|_| rng.below(n)).collect();
                p.push(argmax);
                p
            }
        };
        let flat_sym: Vec<f64> = symbolic.iter().copied().collect();
        let mut fd = Vec::new();
        let mut sym = Vec::new();
        for &i in &picks {
            let at = |delta: f64| {
                let mut f = feeds.clone();
                let mut arr = base.clone();
                *arr.iter_mut().nth(i).unwrap() += delta;
                f.insert(input_name.clone(), Tensor::Real(arr));
                loss_at(g, env, &f, loss)
            };
            fd.push((at(h) - at(-h)) / (2.0 * h));
            sym.push(flat_sym[i]);
        }
        let scale = flat_sym.iter().map(|v| v.abs()).fold(0.0, f64::max).max(0.01 * global_scale).max(1e-12);
        let diff = fd.iter().zip(&sym).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let err = diff / scale;
        assert!(
            err <= tol,
            "gradient of `{name}`: relative error {err:e} > {tol:e} (fd {fd:?} vs symbolic {sym:?})"
        );
        worst = worst.max(err);
    }
    worst
}
