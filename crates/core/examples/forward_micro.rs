//! Times the U-Net forward pass alone (evaluation mode), for profiling.
use candle_core::{Device, Tensor};
use ddlab_core::nn::{ParamBuilder, ParamStore, UNet, UNetConfig};
use std::time::Instant;

fn main() {
    let dev = Device::Cpu;
    let preset = std::env::var("PRESET").unwrap_or_else(|_| "mnist".into());
    let cfg = UNetConfig::preset(&preset).unwrap();
    let size = if preset == "cifar" { 32 } else { 28 };
    let store = ParamStore::new();
    let net = UNet::new(&ParamBuilder::new(&store, 0, &dev), &cfg).unwrap();
    // DETACHED=1: the inference copy, as the samplers use it.
    let net = if std::env::var_os("DETACHED").is_some() {
        net.detached()
    } else {
        net
    };
    let x = Tensor::randn(0f32, 1f32, (64, cfg.in_channels, size, size), &dev).unwrap();
    let iters: usize = std::env::var("ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut times = vec![];
    for _ in 0..iters {
        let t0 = Instant::now();
        let y = net.forward(&x, &[500; 64], None, None).unwrap();
        drop(y);
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "forward median {:.3} s, min {:.3} s",
        times[iters / 2],
        times[0]
    );
}
