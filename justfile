# ddlab's recipes. Each wraps a plain cargo command, so everything also works without `just`
# (install it with `cargo install just`).

default:
    @just --list

# The main job: a sweep (default: the quickstart on built-in shapes) into runs/ddlab.sqlite, then its report
[group('run')]
sweep spec="experiments/quickstart.toml" *args:
    cargo run --release -- sweep {{spec}} {{args}}

# Train one model: just train --set dataset=mnist --set data_dir=../shared/data/mnist
[group('run')]
train *args:
    cargo run --release -- train {{args}}

# Join a registered sweep as a worker (other machines, through PostgreSQL)
[group('run')]
work sweep *args:
    cargo run --release -- work --sweep {{sweep}} {{args}}

# Watch the store live in the terminal dashboard
[group('look')]
tui *args:
    cargo run --release -- tui {{args}}

# Write reports/NAME/ (charts, samples, index.html, summary.md) for a sweep
[group('look')]
report name *args:
    cargo run --release -- report --sweep {{name}} {{args}}

# List the runs in the store
[group('look')]
runs *args:
    cargo run --release -- runs {{args}}

# The test suite (what the README tells you to run)
[group('dev')]
test:
    cargo test --workspace

# Exactly what CI runs: installs and starts PostgreSQL, then the test suite
[group('dev')]
ci:
    .ci/run

# The Slurm tests on a real single-node Slurm cluster and a local PostgreSQL (as root)
[group('dev')]
test-slurm:
    scripts/slurm-up
    DDLAB_TEST_POSTGRES_URL=$(scripts/postgres-up) cargo test -p ddlab-cli --test slurm

# Format and lint
[group('dev')]
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Speed of every U-Net preset (beside PyTorch when importable), appended to docs/BENCHMARKS.md;
# with arguments, one `ddlab bench` (e.g. just bench --preset cifar --batch 32 --json)
[group('dev')]
bench *args:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -z "{{args}}" ]; then scripts/bench; else cargo run --release -- bench {{args}}; fi

# Build ddlab with CUDA (no CUDA install needed: NVIDIA's wheels go under target/cuda-toolkit)
[group('dev')]
build-cuda *args:
    scripts/build-cuda {{args}}
