//! Reused buffers: the generated code hands back every temporary tensor after its last
//! use (the scheduler knows where that is), and the next step takes the same buffers
//! again instead of asking the allocator for fresh pages.
//!
//! Without it, each training step maps, zero-fills and page-faults in every activation
//! and gradient anew (measured: page faults, `memset` and the kernel's page bookkeeping
//! were ~8% of the small config's step). Buffers are kept by exact length, which is what
//! repeats from layer to layer and step to step; the pool never holds more than the
//! largest set of buffers handed back at once, and `clear` empties it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::ops::Real;

/// The idle buffers of one length, and how many `take` has allocated.
type Bucket = (Vec<Vec<f32>>, usize);

static POOL: Mutex<BTreeMap<usize, Bucket>> = Mutex::new(BTreeMap::new());

/// A buffer of `len` floats; its contents are unspecified (a reused buffer keeps its old
/// values), so callers overwrite every element.
pub fn take(len: usize) -> Vec<f32> {
    if len > 0
        && let Ok(mut pool) = POOL.lock()
    {
        let (idle, allocated) = pool.entry(len).or_default();
        if let Some(v) = idle.pop() {
            return v;
        }
        *allocated += 1;
    }
    vec![0.0; len]
}

/// Hands a buffer back for reuse.
pub fn give(v: Vec<f32>) {
    if v.is_empty() {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        let (idle, allocated) = pool.entry(v.len()).or_default();
        if idle.len() < *allocated {
            idle.push(v);
        }
    }
}

/// Hands a tensor's buffer back for reuse.
pub fn recycle(t: Real) {
    let (v, _) = t.into_raw_vec_and_offset();
    give(v);
}

/// Frees every pooled buffer.
pub fn clear() {
    if let Ok(mut pool) = POOL.lock() {
        pool.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_by_length() {
        let mut a = take(1000);
        a[0] = 7.0;
        let ptr = a.as_ptr();
        give(a);
        // Another test may take it first; if this one gets a 1000-float buffer back it
        // is a pooled one or a fresh zeroed one, never one of another length.
        let b = take(1000);
        assert_eq!(b.len(), 1000);
        assert!(b.as_ptr() == ptr || b[0] == 0.0);
        assert_eq!(take(3).len(), 3);
        give(b);
        // A buffer of a length `take` never allocated is not kept.
        give(vec![1.0; 12_345]);
        assert_eq!(take(12_345)[0], 0.0);
    }
}
