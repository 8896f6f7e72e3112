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

// Updates run over the pool in fixed chunks (`parallel::zip_chunks`): each element's
// update reads only its own values, so the result does not depend on the split.
use crate::parallel::{zip_chunks as par_zip, zip_chunks4 as par_zip3};

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
        for (name, p) in &params {
            match grads.get(name.as_str()) {
                None => bail!("no gradient for parameter `{name}`"),
                Some(g) if g.shape() != p.shape() => {
                    bail!("gradient of `{name}` has shape {:?}, the parameter {:?}", g.shape(), p.shape())
                }
                Some(_) => {}
            }
        }
        self.steps += 1;
        for (name, p) in params {
            let g = grads[name.as_str()];
            match self.method {
                Method::Sgd => {
                    let sgd = |p: &mut f32, g: f32| *p -= lr * g;
                    match (p.as_slice_mut(), g.as_slice()) {
                        (Some(p), Some(g)) => {
                            par_zip(p, g, |p, g| p.iter_mut().zip(g).for_each(|(p, &g)| sgd(p, g)))
                        }
                        _ => p.zip_mut_with(g, |p, &g| sgd(p, g)),
                    }
                }
                Method::AdamW { beta1, beta2, eps, weight_decay } => {
                    let (m, v) = self
                        .moments
                        .entry(name)
                        .or_insert_with(|| (ArrayD::zeros(p.raw_dim()), ArrayD::zeros(p.raw_dim())));
                    let t = self.steps as i32;
                    let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                    let decay = if p.ndim() >= 2 { weight_decay } else { 0.0 };
                    // One pass: both moments and the parameter per element.
                    let adamw = |p: &mut f32, m: &mut f32, v: &mut f32, g: f32| {
                        *m = beta1 * *m + (1.0 - beta1) * g;
                        *v = beta2 * *v + (1.0 - beta2) * g * g;
                        let step = (*m / c1) / ((*v / c2).sqrt() + eps);
                        *p -= lr * (step + decay * *p);
                    };
                    match (p.as_slice_mut(), m.as_slice_mut(), v.as_slice_mut(), g.as_slice()) {
                        (Some(p), Some(m), Some(v), Some(g)) => par_zip3(p, m, v, g, |p, m, v, g| {
                            for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                                adamw(p, m, v, g);
                            }
                        }),
                        _ => ndarray::Zip::from(&mut **p)
                            .and(&mut *m)
                            .and(&mut *v)
                            .and(g)
                            .for_each(|p, m, v, &g| adamw(p, m, v, g)),
                    }
                }
            }
        }
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
