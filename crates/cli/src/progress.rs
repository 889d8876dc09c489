//! Progress display for long work: an indicatif bar on a terminal, plain log lines elsewhere
//! (so logs of batch jobs stay readable).

use ddlab_config::names::terminal_safe;
use ddlab_runner::events::Observer;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>12.bold} [{bar:30.cyan/blue}] {pos:>6}/{len:6} {msg} ({per_sec}, ETA {eta})",
    )
    .expect("valid template")
    .progress_chars("=> ")
}

/// Shows one run's progress.
pub struct RunProgress {
    bar: ProgressBar,
    label: String,
    plain: bool,
    last_line: Mutex<(Instant, String)>,
}

impl RunProgress {
    /// A bar drawn on stderr when it is a terminal.
    pub fn new(label: &str) -> Self {
        let plain = !std::io::stderr().is_terminal();
        let bar = if plain {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new(0)
        };
        Self::with_bar(bar, label, plain)
    }

    /// A bar owned by a multi-bar display.
    pub fn with_bar(bar: ProgressBar, label: &str, plain: bool) -> Self {
        bar.set_style(bar_style());
        bar.set_prefix("train");
        bar.enable_steady_tick(Duration::from_millis(250));
        Self {
            bar,
            label: label.to_string(),
            plain,
            last_line: Mutex::new((Instant::now() - Duration::from_secs(60), String::new())),
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// In plain mode: at most one line per phase every 15 s, plus the phase's end.
    fn log(&self, phase: &str, done: usize, total: usize, extra: &str) {
        if !self.plain {
            return;
        }
        let mut last = self.last_line.lock().unwrap();
        if last.0.elapsed() > Duration::from_secs(15) || last.1 != phase || done == total {
            if last.1 == phase && done == total && last.0.elapsed() < Duration::from_millis(1) {
                return;
            }
            eprintln!("[{}] {phase} {done}/{total}{extra}", self.label);
            *last = (Instant::now(), phase.to_string());
        }
    }
}

impl Drop for RunProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for RunProgress {
    fn step(&self, done: usize, total: usize, loss: f64) {
        if self.bar.prefix() != "train" {
            self.bar.set_prefix("train");
            self.bar.reset();
        }
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
        self.bar.set_message(format!("loss {loss:.4}"));
        self.log("train", done, total, &format!(" loss {loss:.4}"));
    }

    fn phase(&self, name: &str, done: usize, total: usize) {
        if self.bar.prefix() != name {
            self.bar.set_prefix(name.to_string());
            self.bar.set_message("");
            self.bar.reset();
        }
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
        self.log(name, done, total, "");
    }

    fn note(&self, msg: &str) {
        let msg = terminal_safe(msg);
        if self.plain {
            eprintln!("[{}] {msg}", self.label);
        } else {
            self.bar.println(format!("[{}] {msg}", self.label));
        }
    }
}

/// Progress of a whole sweep: a total bar and one bar per active run.
pub struct SweepProgress {
    multi: indicatif::MultiProgress,
    total: ProgressBar,
    plain: bool,
}

impl SweepProgress {
    pub fn new(total_runs: usize, already_done: usize) -> Self {
        let plain = !std::io::stderr().is_terminal();
        let multi = if plain {
            indicatif::MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        } else {
            indicatif::MultiProgress::new()
        };
        let total = multi.add(ProgressBar::new(total_runs as u64));
        total.set_style(
            ProgressStyle::with_template("{prefix:>12.bold.green} [{bar:30.green}] {pos}/{len} runs {msg} (elapsed {elapsed})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        total.set_prefix("sweep");
        total.set_position(already_done as u64);
        Self {
            multi,
            total,
            plain,
        }
    }

    pub fn println(&self, msg: &str) {
        if self.plain {
            eprintln!("{msg}");
        } else {
            let _ = self.multi.println(msg);
        }
    }

    pub fn finish(&self) {
        self.total.finish_and_clear();
    }
}

impl ddlab_runner::sweep::ObserverFactory for SweepProgress {
    fn create(&self, run: &ddlab_store::RunRow) -> Box<dyn Observer> {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(run.steps_total as u64));
        let label = format!("#{} {}", run.id, terminal_safe(&run.name));
        bar.set_message(label.clone());
        Box::new(RunProgress::with_bar(bar, &label, self.plain))
    }

    fn finished(&self, run: &ddlab_store::RunRow, outcome: &ddlab_runner::execute::Outcome) {
        use ddlab_runner::execute::Outcome;
        self.total.inc(1);
        let line = match outcome {
            Outcome::Completed {
                final_loss,
                nll_bpd,
            } => format!(
                "completed #{} {}: loss {}, NLL {}",
                run.id,
                run.name,
                final_loss.map_or("-".into(), |l| format!("{l:.4}")),
                nll_bpd.map_or("-".into(), |b| format!("{b:.3} bits/dim"))
            ),
            Outcome::Interrupted { step } => {
                format!("interrupted #{} {} at step {step}", run.id, run.name)
            }
            Outcome::Failed { error } => format!("failed #{} {}: {error}", run.id, run.name),
            Outcome::Pruned { step, reason } => {
                format!("pruned #{} {} at step {step}: {reason}", run.id, run.name)
            }
        };
        self.println(&terminal_safe(&line));
    }
}
