//! A text corpus as byte tokens: the byte-level tokenizer (token = byte, 256 of
//! them), the train/validation split, and random windows as batches.

use adjoint::init::Rng;
use adjoint::ndarray::Array2;

/// The vocabulary of the byte-level tokenizer.
pub const VOCAB: usize = 256;

/// The text bundled with the examples (`examples/data/README.md`).
pub const BUNDLED: &str = include_str!("../data/fortunes.txt");

/// A corpus split into training and validation bytes.
pub struct Corpus {
    pub train: Vec<u8>,
    pub val: Vec<u8>,
    /// FNV-1a of the whole text: a checkpoint remembers what it was trained on.
    pub fingerprint: u64,
}

impl std::fmt::Debug for Corpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Corpus {{ train: {} bytes, val: {} bytes, fingerprint: {:016x} }}",
            self.train.len(),
            self.val.len(),
            self.fingerprint
        )
    }
}

impl Corpus {
    /// The last `val_fraction` of the text (at a line start) is held out.
    pub fn new(text: &str, val_fraction: f64, context: usize) -> Result<Corpus, String> {
        let bytes = text.as_bytes();
        let mut cut = ((bytes.len() as f64) * (1.0 - val_fraction)) as usize;
        while cut < bytes.len() && cut > 0 && bytes[cut - 1] != b'\n' {
            cut += 1;
        }
        let (train, val) = bytes.split_at(cut.min(bytes.len()));
        for (part, what) in [(train, "training"), (val, "validation")] {
            if part.len() <= context + 1 {
                return Err(format!(
                    "the corpus is too small: its {what} part has {} bytes, and a window of context {context} needs at least {}",
                    part.len(),
                    context + 2
                ));
            }
        }
        Ok(Corpus { train: train.to_vec(), val: val.to_vec(), fingerprint: fnv1a(bytes) })
    }

    /// Reads a UTF-8 text file.
    pub fn from_file(path: &str, val_fraction: f64, context: usize) -> Result<Corpus, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let text = String::from_utf8(bytes).map_err(|e| format!("{path}: not UTF-8 text ({e})"))?;
        Corpus::new(&text, val_fraction, context)
    }
}

/// `batch` windows of `context + 1` bytes at random offsets of `bytes`: the tokens are
/// each window's first `context` bytes, the targets the next byte of each.
pub fn batch(bytes: &[u8], batch: usize, context: usize, rng: &mut Rng) -> (Array2<i32>, Array2<i32>) {
    let starts = bytes.len() - context;
    let mut tokens = Array2::zeros((batch, context));
    let mut targets = Array2::zeros((batch, context));
    for b in 0..batch {
        let at = (rng.next_u64() % starts as u64) as usize;
        for t in 0..context {
            tokens[[b, t]] = i32::from(bytes[at + t]);
            targets[[b, t]] = i32::from(bytes[at + t + 1]);
        }
    }
    (tokens, targets)
}

/// Text from byte tokens (invalid UTF-8 shown as U+FFFD).
pub fn decode(tokens: &[i32]) -> String {
    let bytes: Vec<u8> = tokens.iter().map(|&t| t.clamp(0, 255) as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn encode(text: &str) -> Vec<i32> {
    text.bytes().map(i32::from).collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_batches_and_round_trip() {
        let c = Corpus::new(BUNDLED, 0.1, 64).unwrap();
        assert_eq!(c.train.len() + c.val.len(), BUNDLED.len());
        assert_eq!(c.train.last(), Some(&b'\n'), "the split is at a line start");
        let (x, y) = batch(&c.train, 3, 64, &mut Rng::new(1));
        assert_eq!(x.shape(), &[3, 64]);
        assert_eq!(x.slice(adjoint::ndarray::s![.., 1..]), y.slice(adjoint::ndarray::s![.., ..63]));
        assert_eq!(decode(&encode("naïve %")), "naïve %");
        assert!(Corpus::new("short", 0.1, 64).unwrap_err().contains("too small"));
    }
}
