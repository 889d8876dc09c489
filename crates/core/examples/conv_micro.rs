//! Times the conv op (forward, and the backward of all three inputs) at the U-Net's shapes.
//! Reports thread CPU time, which stays meaningful on a busy machine when run with
//! `RAYON_NUM_THREADS=1` (everything then runs on the calling thread).
use candle_core::{Device, Tensor, Var};
use ddlab_core::ops;

fn cpu_time() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn wall() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn main() {
    // As the ddlab binary does: keep freed memory in the heap, so that timings do not include
    // fresh pages.
    // SAFETY: plain calls into glibc before any allocation-heavy work.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
    let single = std::env::var("RAYON_NUM_THREADS").as_deref() == Ok("1");
    let clock: fn() -> f64 = if single { cpu_time } else { wall };
    let dev = Device::Cpu;
    let b: usize = std::env::var("BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    // (c_in, c_out, side, k, stride, pad, upsample)
    let only: Option<usize> = std::env::var("ONLY").ok().and_then(|s| s.parse().ok());
    for (case, &(ci, co, hw, k, s, p, up)) in [
        (32usize, 32usize, 28usize, 3usize, 1usize, 1usize, 1usize),
        (96, 32, 28, 3, 1, 1, 1),
        (64, 64, 14, 3, 1, 1, 1),
        (128, 64, 14, 3, 1, 1, 1),
        (64, 64, 7, 3, 1, 1, 1),
        (128, 64, 7, 3, 1, 1, 1),
        (64, 192, 7, 1, 1, 0, 1),
        (32, 32, 28, 3, 2, 1, 1),
        (64, 64, 14, 3, 1, 1, 2),
    ]
    .iter()
    .enumerate()
    {
        if only.is_some_and(|o| o != case) {
            continue;
        }
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (b, ci, hw, hw), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1., (co, ci, k, k), &dev).unwrap()).unwrap();
        let bias = Var::from_tensor(&Tensor::randn(0f32, 1., co, &dev).unwrap()).unwrap();
        let opts = ops::ConvOptions {
            stride: s,
            padding: p,
            upsample: up,
        };
        let ho = (hw * up + 2 * p - k) / s + 1;
        let flops = 2.0 * (b * co * ci * k * k * ho * ho) as f64;
        let mut tf = vec![];
        let mut tb = vec![];
        for _ in 0..if only.is_some() { 40 } else { 7 } {
            let t0 = clock();
            let y = ops::conv2d_fused(x.as_tensor(), w.as_tensor(), bias.as_tensor(), opts, None)
                .unwrap();
            tf.push(clock() - t0);
            let loss = y.sum_all().unwrap();
            let t0 = clock();
            let g = loss.backward().unwrap();
            tb.push(clock() - t0);
            drop(g);
        }
        tf.sort_by(f64::total_cmp);
        tb.sort_by(f64::total_cmp);
        println!(
            "ci{ci:4} co{co:4} {hw:2}x{hw:<2} k{k} s{s} up{up}: fwd {:7.2} ms {:6.1} GF/s | bwd {:7.2} ms {:6.1} GF/s",
            tf[3] * 1e3,
            flops / tf[3] / 1e9,
            tb[3] * 1e3,
            2.0 * flops / tb[3] / 1e9
        );
    }
}
