//! Reused buffers: the generated code hands back every temporary tensor after its last
//! use (the scheduler knows where that is), and the next step takes the same buffers
//! again instead of asking the allocator for fresh pages.
//!
//! Without it, each training step maps, zero-fills and page-faults in every activation
//! and gradient anew (measured: page faults, `memset` and the kernel's page bookkeeping
//! were ~8% of the small config's step). Buffers are kept by exact length, which is what
//! repeats from layer to layer and step to step; the pool never holds more than the
//! largest set of buffers handed back at once, and `clear` empties it.
//!
//! Work pinned to one thread, in serial mode (`parallel::serial`: each half of a split
//! batch runs so, on its own pool thread), keeps its buffers in that thread's pool: a
//! buffer then comes back to the core whose cache last held it, and the halves never
//! wait on one lock. With one shared pool, a half took buffers the other core had just
//! written (their lines then move between the caches) and both locked it hundreds of
//! times a step: `examples/gpt/ab.sh` tiny 0.992 and 0.977, small 0.981 and 0.991.
//! Other work shares one pool behind a lock: a whole-batch step starts on whichever
//! pool thread picks it up, and with a pool per thread each of them came to hold a full
//! set (GPT-2's peak RSS 1,416 → 1,861 MiB).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::ops::Real;

/// The idle buffers of one length, and how many `take` has allocated.
type Bucket = (Vec<Vec<f32>>, usize);
type Buckets = BTreeMap<usize, Bucket>;

static SHARED: Mutex<Buckets> = Mutex::new(BTreeMap::new());

thread_local! {
    static LOCAL: RefCell<Buckets> = const { RefCell::new(BTreeMap::new()) };
}

/// `f` on the pool this thread uses now: its own in serial mode, else the shared one.
fn with_pool<R>(f: impl FnOnce(&mut Buckets) -> R) -> Option<R> {
    if crate::parallel::is_serial() {
        Some(LOCAL.with_borrow_mut(f))
    } else {
        SHARED.lock().ok().map(|mut pool| f(&mut pool))
    }
}

/// A buffer of `len` floats; its contents are unspecified (a reused buffer keeps its old
/// values), so callers overwrite every element.
pub fn take(len: usize) -> Vec<f32> {
    if len > 0 {
        let reused = with_pool(|pool| {
            let (idle, allocated) = pool.entry(len).or_default();
            let reused = idle.pop();
            if reused.is_none() {
                *allocated += 1;
            }
            reused
        });
        if let Some(Some(v)) = reused {
            return v;
        }
    }
    vec![0.0; len]
}

/// Hands a buffer back for reuse. A buffer of a length the pool never allocated (one
/// taken from the other pool, say) is freed, so no pool grows past what it allocated.
pub fn give(v: Vec<f32>) {
    if v.is_empty() {
        return;
    }
    with_pool(|pool| {
        let (idle, allocated) = pool.entry(v.len()).or_default();
        if idle.len() < *allocated {
            idle.push(v);
        }
    });
}

/// Hands a tensor's buffer back for reuse.
pub fn recycle(t: Real) {
    let (v, _) = t.into_raw_vec_and_offset();
    give(v);
}

/// Frees every pooled buffer: the shared pool's and this thread's own.
pub fn clear() {
    LOCAL.with_borrow_mut(BTreeMap::clear);
    if let Ok(mut pool) = SHARED.lock() {
        pool.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_by_length_to_the_pool_in_use() {
        // Shared: another test may take the buffer first; if this one gets a 1000-float
        // buffer back it is the pooled one or a fresh zeroed one.
        let mut a = take(1000);
        a[0] = 7.0;
        let ptr = a.as_ptr();
        give(a);
        let b = take(1000);
        assert_eq!(b.len(), 1000);
        assert!(b.as_ptr() == ptr || b[0] == 0.0);
        give(b);
        // A buffer of a length the pool never allocated is not kept.
        give(vec![1.0; 12_345]);
        assert_eq!(take(12_345)[0], 0.0);
    }

    #[test]
    fn serial_mode_keeps_buffers_on_their_thread() {
        crate::parallel::serial(|| {
            let mut a = take(999);
            a[0] = 7.0;
            let ptr = a.as_ptr();
            give(a);
            // This thread's pool: nothing else can take the buffer first.
            let b = take(999);
            assert_eq!((b.as_ptr(), b[0]), (ptr, 7.0));
            // Given on another thread, also in serial mode, it is freed there, not kept.
            std::thread::spawn(move || {
                crate::parallel::serial(|| {
                    give(b);
                    assert_eq!(take(999)[0], 0.0, "kept by a thread that never allocated it");
                })
            })
            .join()
            .unwrap();
            // What this thread gives back is in its own pool until `clear`.
            let mut c = take(999);
            c[0] = 5.0;
            give(c);
            assert_eq!(LOCAL.with_borrow(|p| p[&999].0.len()), 1);
            clear();
            assert_eq!(take(999)[0], 0.0, "clear frees this thread's buffers");
        });
    }
}
