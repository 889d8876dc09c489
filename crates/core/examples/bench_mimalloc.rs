//! The same benchmark as `bench`, with mimalloc as the global allocator.

mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    common::main_with("mimalloc");
}
