//! Shared by the benchmark examples: argument parsing, peak RSS and the JSON line.

use ddlab_core::Device;
use ddlab_core::bench::{BenchConfig, run};

/// Peak resident set size of this process in MiB (Linux's VmHWM), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn usage() -> ! {
    eprintln!(
        "usage: bench [--preset tiny|mnist|cifar] [--batch N] [--image-size N] [--channels N] \
         [--warmup N] [--iters N]"
    );
    std::process::exit(2)
}

/// Parses the command line, runs the benchmark and prints one JSON object.
pub fn main_with(allocator: &str) {
    let mut allocator = allocator.to_string();
    if std::env::var_os("DDLAB_MALLOPT").is_some() {
        // glibc: keep freed memory in the heap instead of returning it to the kernel, so
        // that the next step's buffers need no fresh, zeroed pages.
        // SAFETY: plain calls into glibc before any allocation-heavy work.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TOP_PAD, 16 << 20);
        }
        allocator.push_str("+mallopt");
    }
    let allocator = allocator.as_str();
    let mut cfg = BenchConfig::new("mnist", 64, Device::Cpu);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        let num = || value.parse::<usize>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--preset" => cfg.preset = value.clone(),
            "--batch" => cfg.batch = num(),
            "--image-size" => cfg.image_size = Some(num()),
            "--channels" => cfg.channels = Some(num()),
            "--warmup" => cfg.warmup = num(),
            "--iters" => cfg.iters = num(),
            _ => usage(),
        }
    }
    let report = match run(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1)
        }
    };
    let mut json = serde_json::to_value(&report).expect("a report serialises");
    json["allocator"] = allocator.into();
    json["peak_rss_mib"] = peak_rss_mib().into();
    println!("{json}");
}
