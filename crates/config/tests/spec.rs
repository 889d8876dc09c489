//! Sweep specs and run configs: grids expand as written, and every bad input is one sentence
//! naming the file, the line and the key — before anything runs.

use ddlab_config::RunConfig;
use ddlab_config::overrides::parse_override;
use ddlab_config::spec::{load_run_config, load_sweep, load_sweep_with};
use std::path::PathBuf;

fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

fn err(text: &str) -> String {
    let (_d, p) = write("s.toml", text);
    let e = load_sweep(&p, &[]).unwrap_err().to_string();
    assert!(e.contains("s.toml"), "error must name the file: {e}");
    e
}

const HEAD: &str = "[sweep]\nname = \"t\"\n";

#[test]
fn the_grid_is_a_cartesian_product_in_file_order() {
    let (_d, p) = write(
        "s.toml",
        &format!(
            "{HEAD}[base]\nsteps = 10\nmodel = \"tiny\"\n[grid]\nschedule = [\"linear\", \"cosine\"]\nT = [100, 250, 1000]\nseed = [0, 1]\n"
        ),
    );
    let s = load_sweep(&p, &["steps=20".into()]).unwrap();
    assert_eq!(s.name, "t");
    assert_eq!(s.runs.len(), 12);
    assert_eq!(s.runs[0].name, "schedule=linear,T=100,seed=0");
    assert_eq!(s.runs[11].name, "schedule=cosine,T=1000,seed=1");
    assert!(
        s.runs.iter().all(|r| r.resolved.config.steps == 20),
        "--set overrides [base]"
    );
    let hashes: std::collections::HashSet<_> = s.runs.iter().map(|r| &r.config_hash).collect();
    assert_eq!(hashes.len(), 12);
    // The same config always has the same identity; an explicit default does not change it.
    let again = load_sweep(&p, &["steps=20".into(), "lr=0.0002".into()]).unwrap();
    assert_eq!(again.runs[3].config_hash, s.runs[3].config_hash);

    // --set on a grid key fixes its axis; --grid replaces an axis or adds one.
    let fixed = load_sweep(&p, &["T=1000".into()]).unwrap();
    assert_eq!(fixed.runs.len(), 4);
    assert!(fixed.runs.iter().all(|r| r.resolved.config.t == 1000));
    assert_eq!(fixed.runs[0].name, "schedule=linear,T=1000,seed=0");
    let regrid = load_sweep_with(
        &p,
        &[],
        &[
            "T=[50, 500]".into(),
            "schedule=[\"cosine\"]".into(),
            "lr=[1e-3, 2e-4]".into(),
        ],
    )
    .unwrap();
    let names: Vec<&str> = regrid.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(regrid.runs.len(), 8, "{names:?}");
    assert_eq!(names[0], "schedule=cosine,T=50,seed=0,lr=0.001");
    let e = load_sweep_with(&p, &[], &["T=100".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--grid T=100") && e.contains("list"), "{e}");
    let e = load_sweep_with(&p, &[], &["T=[0]".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("T=0") && e.contains("impossible"), "{e}");
}

#[test]
fn unknown_keys_name_the_line_and_suggest() {
    let e = err(&format!("{HEAD}[base]\nsteps = 10\nschedul = \"cosine\"\n"));
    assert!(
        e.contains(":5:")
            && e.contains("unknown key `schedul`")
            && e.contains("did you mean `schedule`"),
        "{e}"
    );
    let e = err(&format!("{HEAD}[grid]\nstepz = [1, 2]\n"));
    assert!(e.contains(":4:") && e.contains("stepz"), "{e}");
}

#[test]
fn wrong_types_and_impossible_values_are_refused() {
    let e = err(&format!("{HEAD}[base]\nT = \"ten\"\n"));
    assert!(e.contains(":4:") && e.contains("key `T`"), "{e}");
    let e = err(&format!("{HEAD}[grid]\nT = [100, \"x\"]\n"));
    assert!(e.contains(":4:") && e.contains("key `T`"), "{e}");
    let e = err(&format!("{HEAD}[grid]\nschedule = \"linear\"\n"));
    assert!(e.contains("must be a list"), "{e}");
    let e = err(&format!(
        "{HEAD}[base]\nschedule = \"linear\"\n[grid]\nT = [100, 0]\n"
    ));
    assert!(
        e.contains(":6:") && e.contains("run `T=0` is impossible") && e.contains("T = 0"),
        "{e}"
    );
    let e = err(&format!("{HEAD}[grid]\nT = [10]\n"));
    assert!(e.contains("outside (0, 1)"), "{e}");
    let e = err(&format!(
        "{HEAD}[base]\nbeta_end = 1.5\nschedule = \"quadratic\"\n"
    ));
    assert!(e.contains("beta_end = 1.5"), "{e}");
    let e = err(&format!("{HEAD}[base]\nsample_steps = 2000\nT = 100\n"));
    assert!(e.contains("sample_steps = 2000"), "{e}");
    let e = err(&format!("{HEAD}[base]\ndataset = \"mnist\"\n"));
    assert!(e.contains("needs data_dir"), "{e}");
    let e = err(&format!("{HEAD}[grid]\nseed = [1, 1]\n"));
    assert!(e.contains("same configuration"), "{e}");
}

#[test]
fn malformed_files_are_one_sentence() {
    let e = err("[sweep\nname = 1");
    assert!(e.contains(":1:"), "{e}");
    let e = err("[base]\nsteps = 1\n");
    assert!(e.contains("sweep"), "{e}");
    let e = err(&format!("{HEAD}[extra]\na = 1\n"));
    assert!(e.contains("extra"), "{e}");
    let e = load_sweep(std::path::Path::new("/no/such/spec.toml"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot read the sweep spec /no/such/spec.toml"),
        "{e}"
    );
}

#[test]
fn overrides_parse_toml_or_bare_words() {
    assert_eq!(
        parse_override("T=250").unwrap().1,
        toml::Value::Integer(250)
    );
    assert_eq!(
        parse_override("schedule=cosine").unwrap().1,
        toml::Value::String("cosine".into())
    );
    assert_eq!(parse_override("timesteps=5").unwrap().0, "T");
    assert!(parse_override("channel_mult=[1,2]").is_ok());
    assert!(
        parse_override("T")
            .unwrap_err()
            .to_string()
            .contains("key=value")
    );
    assert!(
        parse_override("T=-3")
            .unwrap_err()
            .to_string()
            .contains("--set T=-3")
    );
    let e = parse_override("lr=abc").unwrap_err().to_string();
    assert!(e.contains("key `lr`"), "{e}");
}

#[test]
fn run_config_files_and_every_shipped_spec_resolve() {
    let (_d, p) = write("c.toml", "dataset = \"shapes\"\nsteps = 5\nbogus = 1\n");
    let e = load_run_config(Some(&p), &[]).unwrap_err().to_string();
    assert!(e.contains("c.toml:3:") && e.contains("bogus"), "{e}");
    let r = load_run_config(None, &["steps=7".into(), "schedule=sigmoid".into()]).unwrap();
    assert_eq!((r.config.steps, r.schedule.kind.name()), (7, "sigmoid"));
    assert!(RunConfig::keys().contains(&"T".to_string()));

    // A spec naming a CLIP or judge checkpoint that was never trained is refused before
    // anything runs, with the command that makes it.
    let guided =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments/guidance-mnist.toml");
    let e = load_sweep(
        &guided,
        &[
            "data_dir=/tmp".into(),
            "clip_checkpoint=/nonexistent/clip".into(),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("clip_checkpoint") && e.contains("ddlab train-clip"),
        "{e}"
    );

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    // Stand-ins for the helper checkpoints a guided spec names (only their presence is checked
    // when a spec resolves; their contents when a run loads them).
    let helpers = tempfile::tempdir().unwrap();
    let (clip, judge) = (helpers.path().join("clip"), helpers.path().join("judge"));
    std::fs::write(&clip, b"").unwrap();
    std::fs::write(&judge, b"").unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            // Specs that read real data need it present; point them at a stand-in path.
            let mut sets = vec!["data_dir=/tmp".to_string()];
            let text = std::fs::read_to_string(&p).unwrap();
            if text.contains("clip_checkpoint") {
                sets.push(format!("clip_checkpoint={}", clip.display()));
            }
            if text.contains("judge_checkpoint") {
                sets.push(format!("judge_checkpoint={}", judge.display()));
            }
            load_sweep(&p, &sets).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 3);
}

const TINY: &str = "[base]\nmodel = \"tiny\"\nsteps = 10\nT = 100\n";

fn names(text: &str) -> Vec<String> {
    let (_d, p) = write("s.toml", text);
    let s = load_sweep(&p, &[]).unwrap_or_else(|e| panic!("{e}"));
    s.runs.iter().map(|r| r.name.clone()).collect()
}

#[test]
fn zipped_keys_vary_together() {
    let got = names(&format!(
        "{HEAD}{TINY}[grid]\nseed = [0, 1]\n[[grid.zip]]\nsampler = [\"ddpm\", \"ddim\"]\nsample_steps = [100, 20]\n"
    ));
    assert_eq!(
        got,
        [
            "seed=0,sampler=ddpm,sample_steps=100",
            "seed=0,sampler=ddim,sample_steps=20",
            "seed=1,sampler=ddpm,sample_steps=100",
            "seed=1,sampler=ddim,sample_steps=20",
        ]
    );
    // Unequal lengths name the key, its line and both counts.
    let e = err(&format!(
        "{HEAD}{TINY}[[grid.zip]]\nsampler = [\"ddpm\", \"ddim\"]\nsample_steps = [100, 20, 5]\n"
    ));
    assert!(
        e.contains(":9:") && e.contains("`sample_steps` has 3 values but `sampler` has 2"),
        "{e}"
    );
    let e = err(&format!(
        "{HEAD}{TINY}[grid]\nsampler = [\"ddpm\"]\n[[grid.zip]]\nsampler = [\"ddpm\", \"ddim\"]\neta = [0.0, 1.0]\n"
    ));
    assert!(
        e.contains(":10:") && e.contains("varied twice (also at line 8)"),
        "{e}"
    );
    let e = err(&format!(
        "{HEAD}{TINY}[[grid.zip]]\nsampler = [\"ddim\", \"ddim\"]\neta = [1, 1.0]\n"
    ));
    assert!(e.contains("same configuration"), "{e}");
    let e = err(&format!("{HEAD}{TINY}[[grid.zip]]\nsamplr = [\"ddim\"]\n"));
    assert!(
        e.contains(":8:") && e.contains("did you mean `sampler`"),
        "{e}"
    );
    let e = err(&format!(
        "{HEAD}{TINY}[[grid.zips]]\nsampler = [\"ddim\"]\n"
    ));
    assert!(e.contains("unknown grid section `zips`"), "{e}");
}

#[test]
fn conditional_axes_apply_only_where_their_condition_holds() {
    let spec = format!(
        "{HEAD}{TINY}[grid]\nsampler = [\"ddpm\", \"ddim\"]\n[[grid.when]]\nif = {{ sampler = \"ddim\" }}\nsample_steps = [10, 50]\n"
    );
    assert_eq!(
        names(&spec),
        [
            "sampler=ddpm",
            "sampler=ddim,sample_steps=10",
            "sampler=ddim,sample_steps=50"
        ]
    );
    // `unless` against the default (guidance = none), a list as alternatives, a float key
    // compared by value (3 == 3.0).
    let got = names(&format!(
        "{HEAD}{TINY}[grid]\nguidance = [\"none\", \"cfg\"]\ncaptions = [true]\n[[grid.when]]\nunless = {{ guidance = \"none\" }}\nguidance_scale = [1.0, 3.0]\n[[grid.when]]\nif = {{ guidance_scale = [3, 7] }}\nprompt = [\"a red circle\", \"*\"]\n"
    ));
    assert_eq!(
        got,
        [
            "guidance=none,captions=true",
            "guidance=cfg,captions=true,guidance_scale=1.0",
            "guidance=cfg,captions=true,guidance_scale=3.0,prompt=a red circle",
            "guidance=cfg,captions=true,guidance_scale=3.0,prompt=*",
        ]
    );
    // --set fixes a conditional axis; --set on the tested key switches the block off.
    let (_d, p) = write("s.toml", &spec);
    let s = load_sweep(&p, &["sample_steps=50".into()]).unwrap();
    assert_eq!(s.runs.len(), 2);
    assert_eq!(s.grid_keys, ["sampler", "sample_steps"]);
    let s = load_sweep(&p, &["sampler=ddpm".into()]).unwrap();
    assert_eq!(s.runs.len(), 1);
    let s = load_sweep_with(&p, &[], &["sample_steps=[5, 10, 20]".into()]).unwrap();
    assert_eq!(s.runs.len(), 4);

    let e = err(&format!(
        "{HEAD}{TINY}[grid]\nsampler = [\"ddim\"]\n[[grid.when]]\nif = {{ samplr = \"ddim\" }}\neta = [0.5]\n"
    ));
    assert!(
        e.contains(":10:") && e.contains("did you mean `sampler`"),
        "{e}"
    );
    let e = err(&format!(
        "{HEAD}{TINY}[[grid.when]]\nif = {{ sampler = \"dpm\" }}\neta = [0.5]\n"
    ));
    assert!(e.contains(":8:") && e.contains("ddim"), "{e}");
    let e = err(&format!("{HEAD}{TINY}[[grid.when]]\neta = [0.5]\n"));
    assert!(e.contains("needs a condition"), "{e}");
    let e = err(&format!(
        "{HEAD}{TINY}[grid]\neta = [0.5]\n[[grid.when]]\nif = {{ sampler = \"ddim\" }}\neta = [1.0]\n"
    ));
    assert!(e.contains("already an unconditional axis at line 8"), "{e}");
    let e = err(&format!(
        "{HEAD}{TINY}[grid]\nsampler = [\"ddpm\", \"ddim\"]\n[[grid.when]]\nunless = {{ sampler = \"ddpm\" }}\neta = [0.5]\n[[grid.when]]\nif = {{ sampler = \"ddim\" }}\neta = [1.0]\n"
    ));
    assert!(
        e.contains(":13:") && e.contains("already gives a `eta`"),
        "{e}"
    );
}

#[test]
fn equal_configurations_merge_and_counts_stay_bounded() {
    // eta = 0 is the default: the conditional point equals the unconditional run.
    let (_d, p) = write(
        "s.toml",
        &format!(
            "{HEAD}{TINY}[grid]\nseed = [0, 1]\n[[grid.when]]\nif = {{ seed = 1 }}\nsampler = [\"ddim\", \"ddpm\"]\n"
        ),
    );
    let s = load_sweep(&p, &[]).unwrap();
    let got: Vec<&str> = s.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        got,
        ["seed=0", "seed=1,sampler=ddim", "seed=1,sampler=ddpm"]
    );
    assert!(s.merged.is_empty());
    // A `--grid` list with a value twice: each point after the first is merged into its twin.
    let s = load_sweep_with(&p, &[], &["seed=[1, 1.0e0]".into()]).unwrap_err();
    assert!(s.to_string().contains("seed"), "{s}");
    let s = load_sweep_with(&p, &[], &["seed=[1, 1]".into()]).unwrap();
    assert_eq!(s.runs.len(), 2);
    let merged: Vec<&str> = s.merged.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(merged, ["seed=1,sampler=ddim", "seed=1,sampler=ddpm"]);
    // A conditional block that multiplies past the limit is refused while expanding.
    let big: Vec<String> = (1..=200).map(|i| i.to_string()).collect();
    let (_d, p) = write(
        "s.toml",
        &format!(
            "{HEAD}{TINY}[grid]\nseed = [{}]\n[[grid.when]]\nif = {{ sampler = \"ddim\" }}\nwarmup_steps = [{}]\n",
            big.join(", "),
            big.join(", ")
        ),
    );
    let e = ddlab_config::load_sweep_bounded(&p, &[], &[], 10_000)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("more than the 10000 runs allowed") && e.contains("--yes"),
        "{e}"
    );
}
