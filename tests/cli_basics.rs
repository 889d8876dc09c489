//! The `ddlab` binary as a user runs it: schedules, a tiny training run, sampling and
//! evaluating its checkpoint, and one-sentence errors with non-zero exits.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn schedule_prints_full_precision_rows() {
    let out = run_ok(ddlab().args(["schedule", "--kind", "cosine", "--steps", "1000"]));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "t,beta,alpha_bar,snr,posterior_variance");
    assert_eq!(lines.len(), 1001);
    let last: Vec<f64> = lines[1000].split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(last[0], 1000.0);
    assert_eq!(last[1], 0.999);
    let out = run_ok(ddlab().args([
        "schedule", "--kind", "sigmoid", "--steps", "10", "--format", "json",
    ]));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 10);
    assert!(rows[0]["posterior_variance"].as_f64().unwrap() == 0.0);
}

#[test]
fn bad_input_is_one_sentence_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    for (args, needle) in [
        (
            vec!["schedule", "--kind", "linear", "--steps", "0"],
            "T = 0",
        ),
        (
            vec![
                "schedule",
                "--kind",
                "quadratic",
                "--steps",
                "10",
                "--beta-end",
                "1.2",
            ],
            "beta_end = 1.2",
        ),
        (
            vec!["train", "--db", &db, "--set", "shedule=cosine"],
            "did you mean `schedule`",
        ),
        (
            vec![
                "train",
                "--db",
                &db,
                "--set",
                "dataset=mnist",
                "--set",
                "data_dir=/no/such/dir",
            ],
            "/no/such/dir",
        ),
        (
            vec!["sample", "--checkpoint", "/no/such.safetensors"],
            "cannot read /no/such.safetensors",
        ),
        (
            vec!["sweep", "--db", &db, "/no/such/spec.toml"],
            "cannot read the sweep spec",
        ),
        (
            vec!["train", "--db", &db, "--device", "cuda", "--set", "steps=1"],
            "without CUDA support",
        ),
        (vec!["bench", "--device", "cuda:0"], "without CUDA support"),
        (
            vec!["bench", "--preset", "huge"],
            "unknown model preset `huge`",
        ),
        (vec!["bench", "--batch", "0"], "--batch must be at least 1"),
    ] {
        let out = ddlab()
            .current_dir(dir.path())
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: expected one sentence, got: {err}"
        );
    }
    // A missing database is an error for commands that only read it, and is not created.
    let missing = format!("sqlite://{}", dir.path().join("none.sqlite").display());
    let out = ddlab().args(["runs", "--db", &missing]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert!(!dir.path().join("none.sqlite").exists());
}

#[test]
fn train_then_sample_and_evaluate_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let out = run_ok(
        ddlab()
            .current_dir(dir.path())
            .args(["train", "--name", "t1", "--db", &db])
            .args(sets(&["steps=12", "checkpoint_every=5"])),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("completed run 1 `t1`") && text.contains("bits/dim"),
        "{text}"
    );
    // runs/<store id>/train/<id>-<name>: the folder the store recorded.
    let store_id = sqlite_rows(&db, "SELECT value FROM store_info WHERE key = 'store_id'");
    let run_dir = dir
        .path()
        .join("runs")
        .join(&store_id[0][0])
        .join("train/00001-t1");
    let recorded = sqlite_rows(&db, "SELECT checkpoint_path FROM runs WHERE id = 1");
    assert!(recorded[0][0].ends_with("train/00001-t1/checkpoint.safetensors"));
    assert!(run_dir.join("samples.png").is_file());
    let ck = run_dir.join("checkpoint.safetensors");
    let png = image::open(run_dir.join("samples.png")).unwrap();
    assert!(png.width() > 16 * 2);

    let rows = sqlite_rows(
        &db,
        "SELECT status, steps_done, attempts FROM runs WHERE id = 1",
    );
    assert_eq!(
        rows,
        vec![vec!["completed".to_string(), "12".into(), "1".into()]]
    );
    let rows = sqlite_rows(
        &db,
        "SELECT COUNT(*) FROM metrics WHERE run_id = 1 AND name = 'loss'",
    );
    assert_eq!(rows[0][0], "12");
    let rows = sqlite_rows(&db, "SELECT name FROM evals WHERE run_id = 1 ORDER BY name");
    assert_eq!(
        rows,
        vec![
            vec!["nll_bpd".to_string()],
            vec!["nll_bpd_stderr".to_string()]
        ]
    );

    let grid = dir.path().join("g.png");
    run_ok(
        ddlab()
            .args(["sample", "--checkpoint"])
            .arg(&ck)
            .args(["--sampler", "ddpm", "-n", "3", "--out"])
            .arg(&grid),
    );
    assert!(image::open(&grid).is_ok());
    let out = run_ok(
        ddlab()
            .args([
                "eval",
                "--nll",
                "--json",
                "--images",
                "4",
                "--timesteps",
                "2",
                "--checkpoint",
            ])
            .arg(&ck),
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["bpd"].as_f64().unwrap().is_finite() && r["images"] == 4);
}

#[test]
fn bench_json_carries_every_documented_field() {
    for guidance in ["cfg", "clip"] {
        let out = run_ok(ddlab().args([
            "--threads",
            "1",
            "bench",
            "--preset",
            "tiny",
            "--batch",
            "2",
            "--warmup",
            "0",
            "--iters",
            "1",
            "--guidance",
            guidance,
            "--json",
        ]));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(v["preset"], "tiny");
        assert_eq!(v["batch"], 2);
        assert_eq!(v["device"], "cpu");
        assert_eq!(v["guidance"], guidance);
        for key in [
            "train_step_s",
            "forward_s",
            "backward_s",
            "optimizer_s",
            "sample_step_s",
            "guided_sample_step_s",
            "images_per_s",
            "gflops_per_s",
            "peak_rss_mb",
        ] {
            let x = v[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{key} missing: {v}"));
            assert!(x.is_finite() && x > 0.0, "{key} = {x}");
        }
        // The split adds up to no more than the whole step.
        let parts = ["forward_s", "backward_s", "optimizer_s"]
            .map(|k| v[k].as_f64().unwrap())
            .iter()
            .sum::<f64>();
        assert!(parts <= v["train_step_s"].as_f64().unwrap() * 1.001);
    }
}

/// The dashboard in a real pseudo-terminal whose window then closes: it must give up its
/// threads and exit (crossterm alone would spin on the dead terminal forever).
#[test]
fn the_dashboard_exits_when_its_terminal_closes() {
    use std::os::fd::FromRawFd;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    run_ok(
        ddlab()
            .current_dir(dir.path())
            .args(["train", "--db", &db])
            .args(sets(&["steps=2"])),
    );
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors; the null name and termios pointers are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty failed");
    // The child must not inherit the master side, or closing ours would not hang it up.
    // SAFETY: fcntl on descriptors this test owns.
    unsafe {
        libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(slave, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    // SAFETY: each Stdio owns a fresh duplicate of the slave descriptor.
    let slave_io = || unsafe { Stdio::from_raw_fd(libc::dup(slave)) };
    let mut child = ddlab()
        .args(["tui", "--db", &db, "--refresh", "1"])
        .stdin(slave_io())
        .stdout(slave_io())
        .stderr(slave_io())
        .spawn()
        .unwrap();
    // SAFETY: our copy of the slave; the child holds its own.
    unsafe { libc::close(slave) };
    // Play the terminal until the dashboard has drawn its first frame: answer its cursor
    // position query (ESC[6n) as a terminal emulator would.
    let mut seen: Vec<u8> = vec![];
    let mut answered = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&seen).contains("Runs") && Instant::now() < deadline {
        let mut fd = libc::pollfd {
            fd: master,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: a valid pollfd; reads go into a local buffer of the stated size, the
        // answer is a static byte string.
        unsafe {
            if libc::poll(&mut fd, 1, 1000) > 0 {
                let mut buf = [0u8; 4096];
                let n = libc::read(master, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n as usize]);
            }
            if !answered && seen.windows(4).any(|w| w == b"\x1b[6n") {
                let reply = b"\x1b[1;1R";
                libc::write(master, reply.as_ptr().cast(), reply.len());
                answered = true;
            }
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("Runs"), "the dashboard drew no frame: {text}");
    // The terminal window closes.
    // SAFETY: our master descriptor, closed once.
    unsafe { libc::close(master) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the dashboard kept running after its terminal closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // It ended on its own, not by a signal.
    assert!(status.code().is_some(), "{status}");
}

/// A listing piped into something that stops reading (`| head -1`) ends quietly: no panic
/// message about the closed pipe.
#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let seeds: Vec<String> = (0..3000).map(|s| s.to_string()).collect();
    let spec = dir.path().join("many.toml");
    std::fs::write(
        &spec,
        format!(
            "[sweep]\nname = \"many\"\n[grid]\nseed = [{}]\n",
            seeds.join(", ")
        ),
    )
    .unwrap();
    let mut child = ddlab()
        .args(["sweep", "--dry-run", "--yes"])
        .arg(&spec)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("sweep `many`: 3000 runs"), "{first}");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
}
