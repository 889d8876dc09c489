//! Training and sampling throughput of the U-Net with the system allocator.
//! `RAYON_NUM_THREADS=2 cargo run --release -p ddlab-core --example bench -- --preset mnist`

mod common;

fn main() {
    common::main_with("system");
}
