//! Drawing the next token from a row of logits: temperature, top-k, seeded.

use crate::error::{Result, bail};
use crate::init::Rng;

/// A token index drawn from `softmax(logits / temperature)` restricted to the `top_k`
/// largest logits (`0` keeps all). Temperature `0` is greedy (the first largest).
/// Ties keep the lower index, so the draw depends only on the logits and the stream.
pub fn sample(logits: &[f32], temperature: f32, top_k: usize, rng: &mut Rng) -> Result<usize> {
    if logits.is_empty() {
        bail!("sample: no logits");
    }
    if !(temperature >= 0.0 && temperature.is_finite()) {
        bail!("sample: temperature must be a finite number ≥ 0, not {temperature}");
    }
    if let Some(i) = logits.iter().position(|l| l.is_nan()) {
        bail!("sample: logit {i} is NaN");
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if temperature == 0.0 {
        return Ok(order[0]);
    }
    let keep = if top_k == 0 { logits.len() } else { top_k.min(logits.len()) };
    let kept = &order[..keep];
    let top = f64::from(logits[kept[0]]);
    let weights: Vec<f64> =
        kept.iter().map(|&i| ((f64::from(logits[i]) - top) / f64::from(temperature)).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.uniform() * total;
    for (&i, w) in kept.iter().zip(&weights) {
        if u < *w {
            return Ok(i);
        }
        u -= w;
    }
    Ok(kept[keep - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_and_seeded() {
        let logits = [0.0, 5.0, 1.0, 5.0, -1e4];
        assert_eq!(sample(&logits, 0.0, 0, &mut Rng::new(1)).unwrap(), 1);
        let mut counts = [0usize; 5];
        let mut rng = Rng::new(3);
        for _ in 0..4000 {
            counts[sample(&logits, 1.0, 2, &mut rng).unwrap()] += 1;
        }
        assert_eq!((counts[0], counts[2], counts[4]), (0, 0, 0), "top-2 keeps only the two fives");
        assert!(counts[1] > 1800 && counts[3] > 1800, "{counts:?}");
        let draw = |seed| {
            (0..50)
                .map(|_| 0)
                .scan(Rng::new(seed), |r, _: i32| sample(&logits, 2.0, 0, r).ok())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        assert!(sample(&[f32::NAN], 1.0, 0, &mut Rng::new(1)).is_err());
        assert!(sample(&[], 1.0, 0, &mut Rng::new(1)).is_err());
        assert!(sample(&[1.0], -1.0, 0, &mut Rng::new(1)).is_err());
    }
}
