//! GEMM throughput of the `gemm` crate at the conv shapes (per-image problems).
use ddlab_core::ops::gemm::{MatRef, matmul};
use std::time::Instant;

fn bench(
    m: usize,
    k: usize,
    n: usize,
    threads: usize,
    t_lhs: bool,
    t_rhs: bool,
    reps: usize,
) -> f64 {
    let a = vec![1.0f32; m * k];
    let b = vec![1.0f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let lhs = if t_lhs {
        MatRef::new(&a, k, m).t()
    } else {
        MatRef::new(&a, m, k)
    };
    let rhs = if t_rhs {
        MatRef::new(&b, n, k).t()
    } else {
        MatRef::new(&b, k, n)
    };
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        for _ in 0..reps {
            matmul(&mut c, lhs, rhs, false, threads);
        }
        best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
    }
    2.0 * (m * k * n) as f64 / best / 1e9
}

fn main() {
    println!(
        "1024^3 2 threads: {:.1} GF/s",
        bench(1024, 1024, 1024, 2, false, false, 3)
    );
    println!(
        "1024^3 1 thread: {:.1} GF/s",
        bench(1024, 1024, 1024, 1, false, false, 3)
    );
    for &(m, k, n) in &[
        (32, 784, 288),
        (288, 784, 32),
        (64, 196, 576),
        (576, 196, 64),
        (32, 784, 864),
        (864, 784, 32),
        (96, 784, 288),
        (288, 784, 96),
    ] {
        println!(
            "m{m} k{k} n{n} 1 thread: NN {:.1}  TN {:.1}  NT {:.1} GF/s",
            bench(m, k, n, 1, false, false, 50),
            bench(m, k, n, 1, true, false, 50),
            bench(m, k, n, 1, false, true, 50)
        );
    }
}
