//! Times the direct kernels alone on one image size: the forward conv and the weight gradient
//! (single thread, thread CPU time), to see which one limits the backward pass.
use ddlab_core::ops::direct::{
    Group, Isa, LaneDims, PackedKernel, Padded, conv, pad, transpose_dy, weight_grad_lanes,
    weight_grad_with,
};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (ci, co, hw, imgs) = (args[0], args[1], args[2], args[3]);
    let p = Padded {
        c: ci,
        h: hw,
        w: hw,
    };
    let pd = Padded {
        c: co,
        h: hw,
        w: hw,
    };
    let x: Vec<f32> = (0..ci * hw * hw).map(|i| (i % 7) as f32 * 0.1).collect();
    let dy: Vec<f32> = (0..co * hw * hw).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut xp = vec![0f32; imgs * ci * p.plane() + p.buf_len()];
    let mut dyp = vec![0f32; imgs * co * pd.plane() + pd.buf_len()];
    for m in 0..imgs {
        pad(p, &x, 1, &mut xp[m * ci * p.plane()..]);
        pad(pd, &dy, 1, &mut dyp[m * co * pd.plane()..]);
    }
    let k = PackedKernel::for_isa(Isa::Avx512, co, ci, |o, i, t| (o + i + t) as f32 * 0.01);
    let mut out = vec![0f32; co * p.grid_tiles()];
    let flops = 2.0 * (ci * co * 9 * hw * hw) as f64;
    for rep in 0..3 {
        let t0 = Instant::now();
        for m in 0..imgs {
            conv(p, &xp[m * ci * p.plane()..], &k, &mut out);
        }
        let tf = t0.elapsed().as_secs_f64();
        let mut dw = vec![0f32; co * ci * 9];
        let t0 = Instant::now();
        let target: usize = std::env::var("GROUP_POS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024);
        let group = (target / p.grid()).clamp(1, 16);
        for m0 in (0..imgs).step_by(group) {
            let n = group.min(imgs - m0);
            weight_grad_with(
                Isa::Avx512,
                p,
                &xp[m0 * ci * p.plane()..],
                Group {
                    count: n,
                    stride: ci * p.plane(),
                },
                &dyp[m0 * co * pd.plane() + pd.wp() + 1..],
                pd.plane(),
                Group {
                    count: n,
                    stride: co * pd.plane(),
                },
                co,
                &mut dw,
            );
        }
        let tw = t0.elapsed().as_secs_f64();
        // The lanes layout, dy transposition included.
        let cp = co.div_ceil(16) * 16;
        let mut dyt = vec![0f32; group * hw * hw * cp];
        let mut dw2 = vec![0f32; co * ci * 9];
        let offs: [usize; 9] = std::array::from_fn(|t| (t / 3) * p.wp() + t % 3);
        let t0 = Instant::now();
        for m0 in (0..imgs).step_by(group) {
            let n = group.min(imgs - m0);
            for m in 0..n {
                transpose_dy(&dy, co, cp, m, n, &mut dyt);
            }
            let d = LaneDims {
                count: n,
                x_step: ci * p.plane(),
                c_in: ci,
                plane: p.plane(),
                rows: hw,
                cols: hw,
                row_stride: p.wp(),
                cp,
                c_out: co,
            };
            weight_grad_lanes(&xp[m0 * ci * p.plane()..], &dyt, d, &offs, &mut dw2);
        }
        let tl = t0.elapsed().as_secs_f64();
        let err = dw
            .iter()
            .zip(&dw2)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0f32, f32::max);
        println!(
            "rep {rep}: conv {:.1} GF/s, weight grad {:.1} GF/s, lanes {:.1} GF/s (max rel diff {err:.1e})",
            flops * imgs as f64 / tf / 1e9,
            flops * imgs as f64 / tw / 1e9,
            flops * imgs as f64 / tl / 1e9
        );
    }
}
