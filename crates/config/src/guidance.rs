//! Which guidance a run or `ddlab sample` uses: one enum for the run key, the command-line flag
//! and the runner.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Guided sampling: none, a noised CLIP's gradient (GLIDE), or classifier-free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Guidance {
    #[default]
    None,
    /// A noised CLIP's gradient added to the mean (needs `clip_checkpoint`).
    Clip,
    /// Classifier-free: ε(∅) + w (ε(c) − ε(∅)) (needs `captions = true`).
    Cfg,
}

impl Guidance {
    pub const ALL: [Guidance; 3] = [Guidance::None, Guidance::Clip, Guidance::Cfg];

    pub fn name(self) -> &'static str {
        match self {
            Guidance::None => "none",
            Guidance::Clip => "clip",
            Guidance::Cfg => "cfg",
        }
    }

    pub fn is_guided(self) -> bool {
        self != Guidance::None
    }
}

impl fmt::Display for Guidance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Guidance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|g| g.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown guidance `{s}` (expected none, clip or cfg)"))
    }
}
