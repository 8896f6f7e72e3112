//! Optimizers over named parameter tensors: SGD and AdamW, global gradient-norm
//! clipping, and the linear-warmup + cosine learning-rate schedule.
//!
//! Parameters and gradients are passed as `(name, tensor)` lists, as the generated
//! `Params::named_mut` and `named` return them, so one optimizer serves every model.
//! AdamW keeps its two moments per parameter name; [`Optimizer::state`] and
//! [`Optimizer::restore`] move them through checkpoints (`adamw.m.NAME`,
//! `adamw.v.NAME`) so a resumed run continues bit for bit.

use std::collections::BTreeMap;

use ndarray::ArrayD;

use crate::error::{Result, bail};

/// The update rule and its constants (the learning rate comes per step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// `p ← p − lr·g`.
    Sgd,
    /// Adam with decoupled weight decay (Loshchilov & Hutter):
    /// `p ← p − lr·(m̂ / (√v̂ + eps) + weight_decay·p)`. The decay applies to matrices
    /// only (rank ≥ 2), not to biases, gains or other vectors, as in GPT-2.
    AdamW { beta1: f32, beta2: f32, eps: f32, weight_decay: f32 },
}

// Updates run over the pool in fixed chunks (`parallel::CHUNK`): each element's
// update reads only its own values, so the result does not depend on the split.
use crate::parallel::{CHUNK, for_each_chunk, weighted, weighted_add};

/// An optimizer's method, step count and state.
#[derive(Clone, Debug)]
pub struct Optimizer {
    pub method: Method,
    /// Updates done so far (AdamW's bias correction uses it).
    pub steps: u64,
    moments: BTreeMap<String, (ArrayD<f32>, ArrayD<f32>)>,
}

impl Optimizer {
    pub fn new(method: Method) -> Optimizer {
        Optimizer { method, steps: 0, moments: BTreeMap::new() }
    }

    /// One update of every parameter by its gradient, matched by name.
    pub fn update(
        &mut self,
        lr: f32,
        params: Vec<(String, &mut ArrayD<f32>)>,
        grads: &[(String, &ArrayD<f32>)],
    ) -> Result<()> {
        let grads: BTreeMap<&str, &ArrayD<f32>> = grads.iter().map(|(n, g)| (n.as_str(), *g)).collect();
        let mut given = Vec::with_capacity(params.len());
        for (name, p) in params {
            match grads.get(name.as_str()) {
                None => bail!("no gradient for parameter `{name}`"),
                Some(g) if g.shape() != p.shape() => {
                    bail!("gradient of `{name}` has shape {:?}, the parameter {:?}", g.shape(), p.shape())
                }
                Some(g) => given.push((name, p, Grad::Given(g))),
            }
        }
        self.apply(lr, given)
    }

    /// `grads ← w_grads·grads + w_other·other` (the two parts of a split batch, as
    /// `parallel::combine` adds them), then the update by those sums: one pass over
    /// memory (each chunk summed, then updated while in cache) and one hand-off to the
    /// thread pool for both, where combining first and updating after took two passes
    /// and a hand-off per large tensor (tiny config: 2.6% of the step in the update
    /// alone, `perf`). `grads[k]` and `other[k]` are the gradients of `params[k]` (the
    /// generated `tensors()` lists, in `named()` order); lists of different lengths or
    /// a tensor of another shape are an error before anything changes.
    pub fn update_sum(
        &mut self,
        lr: f32,
        params: Vec<(String, &mut ArrayD<f32>)>,
        grads: Vec<&mut ArrayD<f32>>,
        w_grads: f32,
        other: &[&ArrayD<f32>],
        w_other: f32,
    ) -> Result<()> {
        if grads.len() != params.len() || other.len() != params.len() {
            bail!("{} parameters, {} gradients and {} to add", params.len(), grads.len(), other.len());
        }
        let mut sums = Vec::with_capacity(params.len());
        for (((name, p), g), o) in params.into_iter().zip(grads).zip(other) {
            if g.shape() != p.shape() || o.shape() != p.shape() {
                bail!(
                    "gradients of `{name}` have shapes {:?} and {:?}, the parameter {:?}",
                    g.shape(),
                    o.shape(),
                    p.shape()
                );
            }
            sums.push((name, p, Grad::Sum { dst: g, w_dst: w_grads, src: o, w_src: w_other }));
        }
        self.apply(lr, sums)
    }

    /// The update of each `(name, parameter, gradient)`, checked to match in shape.
    fn apply(&mut self, lr: f32, tensors: Vec<(String, &mut ArrayD<f32>, Grad)>) -> Result<()> {
        if let Method::AdamW { .. } = self.method {
            for (name, p, _) in &tensors {
                if let Some((m, v)) = self.moments.get(name)
                    && (m.shape() != p.shape() || v.shape() != p.shape())
                {
                    bail!(
                        "AdamW moments of `{name}` have shape {:?}, the parameter {:?}",
                        m.shape(),
                        p.shape()
                    );
                }
            }
            for (name, p, _) in &tensors {
                self.moments
                    .entry(name.clone())
                    .or_insert_with(|| (ArrayD::zeros(p.raw_dim()), ArrayD::zeros(p.raw_dim())));
            }
        }
        self.steps += 1;
        let t = self.steps.min(i32::MAX as u64) as i32;
        let rule = |decays: bool| match self.method {
            Method::Sgd => Rule::Sgd { lr },
            Method::AdamW { beta1, beta2, eps, weight_decay } => Rule::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                c1: 1.0 - beta1.powi(t),
                c2: 1.0 - beta2.powi(t),
                decay: if decays { weight_decay } else { 0.0 },
            },
        };
        let mut slots: BTreeMap<&str, &mut (ArrayD<f32>, ArrayD<f32>)> =
            self.moments.iter_mut().map(|(k, mv)| (k.as_str(), mv)).collect();
        // Contiguous tensors go into one list of chunks run over the pool at once; any
        // other (not from generated code) is updated on its own, element by element.
        let mut chunks: Vec<Chunk> = Vec::new();
        for (name, p, grad) in tensors {
            // Decay applies to matrices only (rank ≥ 2), as in GPT-2.
            let rule = rule(p.ndim() >= 2);
            let moments = slots.remove(name.as_str());
            let contiguous = p.is_standard_layout()
                && moments.as_ref().is_none_or(|mv| mv.0.is_standard_layout() && mv.1.is_standard_layout())
                && match &grad {
                    Grad::Given(g) => g.is_standard_layout(),
                    Grad::Sum { dst, src, .. } => dst.is_standard_layout() && src.is_standard_layout(),
                };
            if !contiguous {
                strided_update(rule, p, moments, grad);
                continue;
            }
            let p = p.as_slice_mut().expect("standard layout");
            let mut moments = moments.map(|mv| {
                let (m, v) = (&mut mv.0, &mut mv.1);
                (m.as_slice_mut().expect("standard layout"), v.as_slice_mut().expect("standard layout"))
            });
            let mut grad = match grad {
                Grad::Given(g) => Slices::Given(g.as_slice().expect("standard layout")),
                Grad::Sum { dst, w_dst, src, w_src } => Slices::Sum {
                    dst: dst.as_slice_mut().expect("standard layout"),
                    w_dst,
                    src: src.as_slice().expect("standard layout"),
                    w_src,
                },
            };
            let mut rest = p;
            while !rest.is_empty() {
                let n = CHUNK.min(rest.len());
                let (p, tail) = std::mem::take(&mut rest).split_at_mut(n);
                rest = tail;
                let mv = moments.as_mut().map(|(m, v)| {
                    let (m0, m1) = std::mem::take(m).split_at_mut(n);
                    let (v0, v1) = std::mem::take(v).split_at_mut(n);
                    (*m, *v) = (m1, v1);
                    (m0, v0)
                });
                let g = grad.split_front(n);
                chunks.push(Chunk { rule, p, moments: mv, grad: g });
            }
        }
        for_each_chunk(chunks, Chunk::run);
        Ok(())
    }
    /// The state to checkpoint: AdamW's moments by `adamw.m.NAME` / `adamw.v.NAME`.
    pub fn state(&self) -> Vec<(String, &ArrayD<f32>)> {
        let mut out = Vec::new();
        for (name, (m, v)) in &self.moments {
            out.push((format!("adamw.m.{name}"), m));
            out.push((format!("adamw.v.{name}"), v));
        }
        out
    }

    /// The names and shapes [`state`](Self::state) has for these parameters after at
    /// least one update, to check a checkpoint against.
    pub fn state_shapes(&self, params: &[(String, Vec<usize>)]) -> Vec<(String, Vec<usize>)> {
        match self.method {
            Method::Sgd => Vec::new(),
            Method::AdamW { .. } => params
                .iter()
                .flat_map(|(n, s)| [(format!("adamw.m.{n}"), s.clone()), (format!("adamw.v.{n}"), s.clone())])
                .collect(),
        }
    }

    /// Puts back a checkpoint's state (as checked against
    /// [`state_shapes`](Self::state_shapes)) and step count.
    pub fn restore(&mut self, steps: u64, mut state: BTreeMap<String, ArrayD<f32>>) -> Result<()> {
        self.steps = steps;
        self.moments.clear();
        if self.method == Method::Sgd {
            if let Some(k) = state.keys().next() {
                bail!("unexpected optimizer state `{k}` for SGD");
            }
            return Ok(());
        }
        let names: std::collections::BTreeSet<String> = state
            .keys()
            .filter_map(|k| k.strip_prefix("adamw.m.").or_else(|| k.strip_prefix("adamw.v.")))
            .map(String::from)
            .collect();
        for name in names {
            let m = state.remove(&format!("adamw.m.{name}"));
            let v = state.remove(&format!("adamw.v.{name}"));
            let (Some(m), Some(v)) = (m, v) else { bail!("AdamW state for `{name}` is incomplete") };
            if m.shape() != v.shape() {
                bail!("AdamW moments of `{name}` differ in shape");
            }
            self.moments.insert(name, (m, v));
        }
        if let Some(k) = state.keys().next() {
            bail!("unexpected optimizer state `{k}`");
        }
        Ok(())
    }
}

/// A tensor's gradient: as given, or the weighted sum of two parts' gradients,
/// written back into the first.
enum Grad<'a> {
    Given(&'a ArrayD<f32>),
    Sum { dst: &'a mut ArrayD<f32>, w_dst: f32, src: &'a ArrayD<f32>, w_src: f32 },
}

/// `Grad` over contiguous storage.
enum Slices<'a> {
    Given(&'a [f32]),
    Sum { dst: &'a mut [f32], w_dst: f32, src: &'a [f32], w_src: f32 },
}

impl<'a> Slices<'a> {
    /// The first `n` elements, leaving the rest in `self`.
    fn split_front(&mut self, n: usize) -> Slices<'a> {
        match self {
            Slices::Given(g) => {
                let (head, tail) = g.split_at(n);
                *g = tail;
                Slices::Given(head)
            }
            Slices::Sum { dst, w_dst, src, w_src } => {
                let (d0, d1) = std::mem::take(dst).split_at_mut(n);
                let (s0, s1) = src.split_at(n);
                (*dst, *src) = (d1, s1);
                Slices::Sum { dst: d0, w_dst: *w_dst, src: s0, w_src: *w_src }
            }
        }
    }
}

/// One update rule with its constants for this step and tensor.
#[derive(Clone, Copy)]
enum Rule {
    Sgd { lr: f32 },
    AdamW { lr: f32, beta1: f32, beta2: f32, eps: f32, c1: f32, c2: f32, decay: f32 },
}

impl Rule {
    /// Both moments and the parameter, for one element (AdamW only).
    #[inline(always)]
    fn adamw(self, p: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
        if let Rule::AdamW { lr, beta1, beta2, eps, c1, c2, decay } = self {
            *m = beta1 * *m + (1.0 - beta1) * g;
            *v = beta2 * *v + (1.0 - beta2) * g * g;
            let step = (*m / c1) / ((*v / c2).sqrt() + eps);
            *p -= lr * (step + decay * *p);
        }
    }
}

/// A chunk of one tensor's update: at most `CHUNK` elements.
struct Chunk<'a> {
    rule: Rule,
    p: &'a mut [f32],
    moments: Option<(&'a mut [f32], &'a mut [f32])>,
    grad: Slices<'a>,
}

impl Chunk<'_> {
    /// A summed gradient is added first (the chunk, at most 256 KiB, is still in cache
    /// for the update; for SGD in the same loop), then one loop per rule, so each
    /// vectorises, in the widest build the CPU has (`fused::in_best_build`; without
    /// fused multiply-adds, which Rust never forms on its own, so every build gives the
    /// same bits).
    fn run(self) {
        crate::fused::in_best_build(
            #[inline(always)]
            |_| self.run_here(),
        )
    }

    #[inline(always)]
    fn run_here(self) {
        let Chunk { rule, p, moments, grad } = self;
        let g: &[f32] = match (rule, grad) {
            // SGD on a summed gradient: one pass, the sum written back and used at once.
            (Rule::Sgd { lr }, Slices::Sum { dst, w_dst, src, w_src }) => {
                for ((p, d), &s) in p.iter_mut().zip(dst.iter_mut()).zip(src) {
                    *d = weighted(*d, w_dst, s, w_src);
                    *p -= lr * *d;
                }
                return;
            }
            (_, Slices::Given(g)) => g,
            (_, Slices::Sum { dst, w_dst, src, w_src }) => {
                weighted_add(dst, w_dst, src, w_src);
                dst
            }
        };
        match (rule, moments) {
            (Rule::Sgd { lr }, _) => p.iter_mut().zip(g).for_each(|(p, &g)| *p -= lr * g),
            (Rule::AdamW { .. }, Some((m, v))) => {
                for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                    rule.adamw(p, m, v, g);
                }
            }
            (Rule::AdamW { .. }, None) => unreachable!("AdamW chunks carry their moments"),
        }
    }
}

/// The update of a tensor not in standard layout, element by element.
fn strided_update(
    rule: Rule,
    p: &mut ArrayD<f32>,
    moments: Option<&mut (ArrayD<f32>, ArrayD<f32>)>,
    grad: Grad,
) {
    let g: &ArrayD<f32> = match grad {
        Grad::Given(g) => g,
        Grad::Sum { dst, w_dst, src, w_src } => {
            dst.zip_mut_with(src, |d, &s| *d = w_dst * *d + w_src * s);
            dst
        }
    };
    match (rule, moments) {
        (Rule::Sgd { lr }, _) => p.zip_mut_with(g, |p, &g| *p -= lr * g),
        (Rule::AdamW { .. }, Some((m, v))) => {
            ndarray::Zip::from(p).and(m).and(v).and(g).for_each(|p, m, v, &g| rule.adamw(p, m, v, g))
        }
        (Rule::AdamW { .. }, None) => unreachable!("AdamW tensors carry their moments"),
    }
}

/// Scales the gradients so their global L2 norm is at most `max_norm` (when positive),
/// and returns the norm they had.
pub fn clip_grad_norm(grads: Vec<&mut ArrayD<f32>>, max_norm: f32) -> f32 {
    let sum: f64 = grads.iter().flat_map(|g| g.iter()).map(|&x| f64::from(x) * f64::from(x)).sum();
    let norm = sum.sqrt() as f32;
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / norm;
        for g in grads {
            g.mapv_inplace(|x| x * scale);
        }
    }
    norm
}

/// Linear warmup from 0 to `lr` over `warmup` steps, then a cosine decay to
/// `lr · min_ratio` at step `total`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub lr: f32,
    pub warmup: u64,
    pub total: u64,
    pub min_ratio: f32,
}

impl Schedule {
    /// The learning rate of update number `step` (counting from 0).
    pub fn at(&self, step: u64) -> f32 {
        if step < self.warmup {
            return self.lr * (step + 1) as f32 / self.warmup as f32;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        let floor = f64::from(self.min_ratio);
        (f64::from(self.lr) * (floor + (1.0 - floor) * cosine)) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(name, &tensor)` lists, as the generated `named` returns them.
    fn refs(ts: &[(String, ArrayD<f32>)]) -> Vec<(String, &ArrayD<f32>)> {
        ts.iter().map(|(n, t)| (n.clone(), t)).collect()
    }

    /// `(name, &mut tensor)` lists, as the generated `named_mut` returns them.
    fn refs_mut(ts: &mut [(String, ArrayD<f32>)]) -> Vec<(String, &mut ArrayD<f32>)> {
        ts.iter_mut().map(|(n, t)| (n.clone(), t)).collect()
    }

    /// The tensors alone, as the generated `tensors` returns them.
    fn tensors_of(ts: &[(String, ArrayD<f32>)]) -> Vec<&ArrayD<f32>> {
        ts.iter().map(|(_, t)| t).collect()
    }

    fn arr(v: &[f32], shape: &[usize]) -> ArrayD<f32> {
        ArrayD::from_shape_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn sgd_and_adamw_by_hand() {
        let g = arr(&[0.5, -2.0], &[1, 2]);
        let mut p = arr(&[1.0, 1.0], &[1, 2]);
        let mut sgd = Optimizer::new(Method::Sgd);
        sgd.update(0.1, vec![("w".into(), &mut p)], &[("w".into(), &g)]).unwrap();
        assert_eq!(p, arr(&[0.95, 1.2], &[1, 2]));

        // AdamW's first step moves each weight by lr·sign(g) (m̂/√v̂ = g/|g|), plus decay.
        let method = Method::AdamW { beta1: 0.9, beta2: 0.99, eps: 0.0, weight_decay: 0.1 };
        let mut adam = Optimizer::new(method);
        let mut p = arr(&[1.0, 1.0], &[1, 2]);
        adam.update(0.1, vec![("w".into(), &mut p)], &[("w".into(), &g)]).unwrap();
        let want = [1.0 - 0.1 * (1.0 + 0.1), 1.0 - 0.1 * (-1.0 + 0.1)];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // A vector gets no decay.
        let mut bias = arr(&[1.0, 1.0], &[2]);
        let gb = arr(&[0.5, -2.0], &[2]);
        Optimizer::new(method).update(0.1, vec![("b".into(), &mut bias)], &[("b".into(), &gb)]).unwrap();
        assert!((bias[0] - 0.9).abs() < 1e-6 && (bias[1] - 1.1).abs() < 1e-6, "{bias}");
        // Restoring the state continues exactly.
        let state: BTreeMap<String, ArrayD<f32>> =
            adam.state().into_iter().map(|(n, t)| (n, t.clone())).collect();
        let mut resumed = Optimizer::new(method);
        resumed.restore(adam.steps, state).unwrap();
        let mut p2 = p.clone();
        adam.update(0.1, vec![("w".into(), &mut p)], &[("w".into(), &g)]).unwrap();
        resumed.update(0.1, vec![("w".into(), &mut p2)], &[("w".into(), &g)]).unwrap();
        assert_eq!(p, p2);
    }

    #[test]
    fn update_sum_is_combine_then_update() {
        // Tensors of one element, of several chunks (the pool's path) and a transposed
        // one (the strided path); SGD and AdamW over three steps (moments carried).
        let big = (CHUNK * 4 / 5 + 3) * 5;
        let data = |n: usize, seed: usize| -> Vec<f32> {
            (0..n).map(|i| (((i + seed) * 7919) % 997) as f32 / 997.0 - 0.5).collect()
        };
        let tensors = |seed: usize| -> Vec<(String, ArrayD<f32>)> {
            vec![
                ("a".into(), arr(&data(1, seed), &[1])),
                ("b".into(), arr(&data(big, seed + 1), &[big / 5, 5])),
                ("c".into(), arr(&data(12, seed + 2), &[3, 4]).reversed_axes()),
            ]
        };
        let adamw = Method::AdamW { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1 };
        for method in [Method::Sgd, adamw] {
            let (mut p1, mut p2) = (tensors(0), tensors(0));
            let (mut o1, mut o2) = (Optimizer::new(method), Optimizer::new(method));
            for step in 0..3 {
                let (mut g1, mut g2) = (tensors(10 + step), tensors(10 + step));
                let other_owned = tensors(20 + step);
                let other = refs(&other_owned);
                // The reference: the parts added first (by hand: `combine` wants
                // contiguous tensors), then the plain update.
                for ((_, g), (_, o)) in g1.iter_mut().zip(&other) {
                    g.zip_mut_with(*o, |g, &o| *g = 0.25 * *g + 0.75 * o);
                }
                o1.update(0.1, refs_mut(&mut p1), &refs(&g1)).unwrap();
                let g2_refs = g2.iter_mut().map(|(_, g)| g).collect();
                o2.update_sum(0.1, refs_mut(&mut p2), g2_refs, 0.25, &tensors_of(&other_owned), 0.75)
                    .unwrap();
                assert_eq!(g1, g2, "{method:?} step {step}: the summed gradients");
                assert_eq!(p1, p2, "{method:?} step {step}: the parameters");
            }
            assert_eq!(o1.state(), o2.state());
        }
        // A shape mismatch in the last tensor, or a list too short: an error, and
        // nothing changes.
        let (mut p, mut g) = (tensors(0), tensors(1));
        let mut other = tensors(2);
        other[2].1 = arr(&data(3, 0), &[3]);
        let before = (p.clone(), g.clone());
        let mut o = Optimizer::new(adamw);
        let g_refs = g.iter_mut().map(|(_, g)| g).collect();
        let e = o.update_sum(0.1, refs_mut(&mut p), g_refs, 1.0, &tensors_of(&other), 1.0);
        assert!(e.is_err());
        let g_refs = g.iter_mut().map(|(_, g)| g).collect();
        let e = o.update_sum(0.1, refs_mut(&mut p), g_refs, 1.0, &tensors_of(&other)[..2], 1.0);
        assert!(e.is_err());
        assert_eq!((o.steps, o.state().len()), (0, 0));
        assert_eq!((p, g), before);
    }

    #[test]
    fn mismatches_are_errors() {
        let mut p = arr(&[1.0], &[1]);
        let g = arr(&[1.0, 2.0], &[2]);
        let mut o = Optimizer::new(Method::Sgd);
        assert!(o.update(0.1, vec![("w".into(), &mut p)], &[("w".into(), &g)]).is_err());
        assert!(o.update(0.1, vec![("w".into(), &mut p)], &[]).is_err());
        assert_eq!(o.steps, 0, "a failed update changes nothing");
    }

    #[test]
    fn clipping_and_schedule() {
        let mut a = arr(&[3.0], &[1]);
        let mut b = arr(&[4.0], &[1]);
        assert_eq!(clip_grad_norm(vec![&mut a, &mut b], 1.0), 5.0);
        assert!((a[0] - 0.6).abs() < 1e-6 && (b[0] - 0.8).abs() < 1e-6);
        let s = Schedule { lr: 1.0, warmup: 4, total: 14, min_ratio: 0.1 };
        assert_eq!((s.at(0), s.at(3)), (0.25, 1.0));
        assert_eq!(s.at(4), 1.0);
        assert!((s.at(9) - 0.55).abs() < 1e-6);
        assert!((s.at(14) - 0.1).abs() < 1e-6 && (s.at(100) - 0.1).abs() < 1e-6);
    }
}
