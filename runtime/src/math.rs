//! The scalar functions fused loops call per element: `eˣ`, `tanh`, GELU and its
//! derivative. Each is a branch-free polynomial (so loops over it vectorise), written
//! once over an [`Arith`] that says whether its multiply-adds may be fused.
//!
//! Why the parameter: `f32::mul_add` is one instruction on a CPU with FMA, but a libm
//! call per element in a baseline x86-64 build. A fused loop's body is inlined into each
//! instruction-set build of the row driver (`fused::rows`), and each build hands the
//! body its own `Arith` as a constant, so the branch in [`Arith::mul_add`] folds away:
//! the AVX2 and AVX-512 builds get fused multiply-adds, the portable build plain ones.
//! Measured on 16,384 elements in an AVX-512 build (throwaway bench, AMD EPYC Zen 4):
//! GELU 0.52–0.60 → 0.45 ns an element, GELU′ 0.66–0.68 → 0.52–0.55, exp 0.58 →
//! 0.34–0.42.
//!
//! The two forms round differently (a fused multiply-add rounds once), so a loop's
//! results may differ in the last bits between the portable build and the others; each
//! form is within the accuracy its tests state, and each build is deterministic.

/// How a function may multiply and add: fused into one rounding, or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arith {
    fma: bool,
}

const GELU_C: f32 = 0.044715;

impl Arith {
    /// Separate multiplies and adds: what any target runs without a libm call.
    pub const PLAIN: Arith = Arith { fma: false };
    /// Fused multiply-adds: for code compiled with FMA enabled (`#[target_feature]`).
    pub const FMA: Arith = Arith { fma: true };
    /// What the crate's own target has: FMA when built for it (`-C target-cpu=native`
    /// on a recent x86-64, or any AArch64, where it is baseline), else plain.
    pub const NATIVE: Arith = Arith { fma: cfg!(any(target_feature = "fma", target_arch = "aarch64")) };

    /// `a·b + c`.
    #[inline(always)]
    pub fn mul_add(self, a: f32, b: f32, c: f32) -> f32 {
        if self.fma { a.mul_add(b, c) } else { a * b + c }
    }

    /// `eˣ`: range reduction by `ln 2`, a degree-6 polynomial, and the exponent put in
    /// by bit arithmetic. Relative error within 2e-7 (tested against f64); 0 below
    /// −87.3 (where f32 would be subnormal), +∞ above 88.7, NaN for NaN.
    #[inline(always)]
    pub fn exp(self, x: f32) -> f32 {
        const HI: f32 = 88.722_83;
        const LO: f32 = -87.336_54;
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        // ln 2 split in two so `x − n·ln 2` is exact to f32 precision.
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        let xc = x.clamp(LO, HI);
        // Round to nearest by the 1.5·2²³ trick (|x·log2 e| < 2²²): `round()` is a libm
        // call on baseline x86-64 and would stop the loop vectorising.
        const MAGIC: f32 = 12_582_912.0;
        let shifted = self.mul_add(xc, LOG2E, MAGIC);
        let n = shifted - MAGIC;
        let r = self.mul_add(-n, LN2_LO, self.mul_add(-n, LN2_HI, xc));
        // Cephes' expf polynomial.
        let p = [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1]
            .into_iter()
            .fold(1.987_569_1e-4, |p, c| self.mul_add(p, r, c));
        let e = self.mul_add(p, r * r, r) + 1.0;
        // The integer `n` from the low bits of `shifted` (1.5·2²³ + n, exact for
        // |n| < 2²²): `n as i32` saturates, which the compiler does lane by lane with
        // scalar conversions (a vectorised exp cost 4.5 cycles an element that way).
        let n = shifted.to_bits() as i32 - MAGIC.to_bits() as i32;
        // 2ⁿ in two factors: near the ends of the range one alone would overflow the
        // exponent field (n = 128) or flush to zero (n = −127).
        let half = n >> 1;
        let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
        let y = e * pow2(half) * pow2(n - half);
        if x < LO {
            0.0
        } else if x > HI {
            f32::INFINITY
        } else if x.is_nan() {
            x
        } else {
            y
        }
    }

    /// `tanh` as a rational function of degree 13/6 on [−7.9, 7.9] (the odd-polynomial
    /// form Eigen uses), clamped beyond: several times faster than libm's `tanhf`.
    /// Error within 5e-7 absolute (a few f32 ulps; tested against f64); exactly odd,
    /// and saturates at ±1.
    #[inline(always)]
    pub fn tanh(self, x: f32) -> f32 {
        const CLAMP: f32 = 7.905_311;
        const A: [f32; 6] =
            [2.000_188e-13, -8.604_672e-11, 5.122_297e-8, 1.485_722_4e-5, 6.372_619_3e-4, 4.893_524_6e-3];
        const B: [f32; 3] = [1.185_347_1e-4, 2.268_434_6e-3, 4.893_525e-3];
        let xc = x.clamp(-CLAMP, CLAMP);
        let x2 = xc * xc;
        let p = A.into_iter().fold(-2.760_768_5e-16, |p, c| self.mul_add(p, x2, c));
        let q = B.into_iter().fold(1.198_258_4e-6, |q, c| self.mul_add(q, x2, c));
        let y = xc * p / q;
        // Exactly ±1 from the clamp on (tanh(7.9) is 1 − 2.8e-7): GELU′'s `1 − t²`
        // then vanishes where it should, instead of being the rational function's
        // rounding error times a large `x` (3e-5 at x = 10 with fused multiply-adds).
        if x >= CLAMP {
            1.0
        } else if x <= -CLAMP {
            -1.0
        } else {
            y
        }
    }

    /// GELU, tanh form: `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
    #[inline(always)]
    pub fn gelu(self, x: f32) -> f32 {
        let half = 0.5 * x;
        self.mul_add(half, self.tanh(self.gelu_inner(x)), half)
    }

    /// GELU's derivative: `½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²)`, `t` the
    /// tanh above.
    #[inline(always)]
    pub fn gelu_grad(self, x: f32) -> f32 {
        let k = (2.0 / std::f32::consts::PI).sqrt();
        let t = self.tanh(self.gelu_inner(x));
        let slope = self.mul_add(x * x, 1.5 * GELU_C * k, 0.5 * k);
        let sech2 = self.mul_add(-t, t, 1.0);
        self.mul_add(x * sech2, slope, self.mul_add(t, 0.5, 0.5))
    }

    /// `√(2/π)(x + 0.044715x³)`.
    #[inline(always)]
    fn gelu_inner(self, x: f32) -> f32 {
        let u = (2.0 / std::f32::consts::PI).sqrt() * x;
        self.mul_add(GELU_C * x * x, u, u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: [Arith; 2] = [Arith::PLAIN, Arith::FMA];

    /// The largest `err(x)` over `x = i·10⁻⁴` for every `i` in `steps`.
    fn worst(steps: std::ops::RangeInclusive<i32>, err: impl Fn(f32) -> f64) -> f64 {
        steps.map(|i| err(i as f32 * 1e-4)).fold(0.0, f64::max)
    }

    #[test]
    fn exp_is_accurate_and_total_in_both_forms() {
        for arith in BOTH {
            let exp = |x| arith.exp(x);
            let worst = worst(-870_000..=887_000, |x| {
                let want = f64::from(x).exp();
                ((f64::from(exp(x)) - want) / want).abs()
            });
            assert!(worst < 2e-7, "{arith:?}: worst relative error {worst:e}");
            assert_eq!(exp(f32::NEG_INFINITY), 0.0);
            assert_eq!(exp(-1e4), 0.0);
            assert_eq!(exp(1e4), f32::INFINITY);
            assert_eq!(exp(0.0), 1.0);
            assert!(exp(f32::NAN).is_nan());
        }
    }

    #[test]
    fn tanh_is_accurate_odd_and_saturating_in_both_forms() {
        for arith in BOTH {
            let tanh = |x| arith.tanh(x);
            // [-20, 20]
            let worst = worst(-200_000..=200_000, |x| {
                assert_eq!(tanh(-x), -tanh(x));
                (f64::from(tanh(x)) - f64::from(x).tanh()).abs()
            });
            assert!(worst < 5e-7, "{arith:?}: worst absolute error {worst:e}");
            for x in [1e-30f32, 1e-8, 1e-4] {
                let rel = (f64::from(tanh(x)) / f64::from(x).tanh() - 1.0).abs();
                assert!(rel < 1e-6, "{arith:?}: relative error {rel:e} at {x}");
            }
            assert!(tanh(f32::INFINITY) <= 1.0 && tanh(f32::INFINITY) > 0.999_999);
            assert!(tanh(1e4) <= 1.0 && tanh(-1e4) >= -1.0);
            assert!(tanh(f32::NAN).is_nan());
        }
    }

    #[test]
    fn gelu_and_its_derivative_match_f64_in_both_forms() {
        let k = (2.0f64 / std::f64::consts::PI).sqrt();
        let c = f64::from(GELU_C);
        let t = |x: f64| (k * (x + c * x * x * x)).tanh();
        let error = |got: f32, want: f64| (f64::from(got) - want).abs() / want.abs().max(1.0);
        for arith in BOTH {
            // [-10, 10]
            let worst_gelu = worst(-100_000..=100_000, |x| {
                let xd = f64::from(x);
                error(arith.gelu(x), 0.5 * xd * (1.0 + t(xd)))
            });
            let worst_grad = worst(-100_000..=100_000, |x| {
                let (xd, t) = (f64::from(x), t(f64::from(x)));
                error(
                    arith.gelu_grad(x),
                    0.5 * (1.0 + t) + 0.5 * xd * (1.0 - t * t) * k * (1.0 + 3.0 * c * xd * xd),
                )
            });
            assert!(worst_gelu < 2e-6, "{arith:?}: GELU worst error {worst_gelu:e}");
            // tanh's 5e-7 absolute error, through `1 − t²` times `x` times the slope
            // of the inner cubic: about 4.4e-6 at worst (near |x| = 3), in both forms.
            assert!(worst_grad < 1e-5, "{arith:?}: GELU′ worst error {worst_grad:e}");
            assert!(arith.gelu(f32::NAN).is_nan() && arith.gelu_grad(f32::NAN).is_nan());
            assert!((arith.gelu(1e4) - 1e4).abs() <= 1e-2 && arith.gelu(-1e4).abs() <= 1e-2);
        }
    }
}
