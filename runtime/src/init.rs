//! Seeded parameter initialisation: `offset + std · N(0, 1)` per element.
//!
//! The generator is SplitMix64 with Box–Muller normals: tiny, fast, and the same
//! numbers on every platform, so a seed names one initialisation everywhere.

use ndarray::{ArrayD, IxDyn};

/// A seeded random stream.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed ^ 0x5DEE_CE66_D1CE_4E5B }
    }

    /// The generator's state, to save with a checkpoint.
    pub fn state(&self) -> u64 {
        self.state
    }

    pub fn from_state(state: u64) -> Rng {
        Rng { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal sample.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A tensor of `offset + std · N(0, 1)` samples.
pub fn normal(rng: &mut Rng, shape: &[usize], offset: f32, std: f32) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        if std == 0.0 { offset } else { offset + std * rng.normal() as f32 }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_roughly_standard() {
        let a = normal(&mut Rng::new(7), &[4000], 0.0, 1.0);
        let b = normal(&mut Rng::new(7), &[4000], 0.0, 1.0);
        assert_eq!(a, b);
        let mean = a.mean().unwrap();
        let var = a.mapv(|v| (v - mean) * (v - mean)).mean().unwrap();
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.08, "mean {mean} var {var}");
        assert_ne!(a, normal(&mut Rng::new(8), &[4000], 0.0, 1.0));
        assert!(normal(&mut Rng::new(1), &[3], 1.0, 0.0).iter().all(|&v| v == 1.0));
    }
}
