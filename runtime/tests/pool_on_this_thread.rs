//! `parallel::pool_on_this_thread`, in a test binary of its own: the thread pool is
//! process-wide and can be made only once, so the runtime's unit tests (which use the
//! pool rayon makes on first use) cannot try it.

use adjoint::gemm::{MatRef, sgemm};
use adjoint::parallel;

#[test]
fn the_calling_thread_becomes_pool_thread_zero_once() {
    parallel::pool_on_this_thread().unwrap();
    assert_eq!(rayon::current_thread_index(), Some(0));
    assert_eq!(parallel::threads(), rayon::current_num_threads());

    // A step runs here (no hand-off), and its two parts still run.
    assert_eq!(parallel::on_pool(rayon::current_thread_index), Some(0));
    let before = parallel::split_steps();
    assert_eq!(parallel::join_parts(|| 1, || 2), (1, 2));
    assert_eq!(parallel::split_steps(), before + 1);

    // A product large enough to split over the pool gives serial mode's bits.
    let (m, k, n) = (384, 256, 320);
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 * 0.25 - 1.5).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 * 0.125 - 0.625).collect();
    let product = || {
        let mut c = vec![0.0f32; m * n];
        sgemm(MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n), &mut c).map(|()| c)
    };
    let pooled = product().unwrap();
    let serial = parallel::serial(product).unwrap();
    assert_eq!(pooled, serial);
    assert!(pooled.iter().any(|&x| x != 0.0));

    // Once the pool exists, a second call is an error that says when to call it.
    let e = parallel::pool_on_this_thread().unwrap_err();
    assert!(e.to_string().contains("before anything uses the thread pool"), "{e}");
}
