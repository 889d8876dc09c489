//! The named U-Net configurations, and the images each is made for.

use serde::{Deserialize, Serialize};

use crate::nn::UNetConfig;

/// A U-Net preset: its name in run configs, specs and `ddlab bench --preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// A few thousand parameters: for tests.
    Tiny,
    /// The quickstart's model for the 16×16 shapes.
    Small,
    /// 1.16 M parameters, for 28×28 digits.
    Mnist,
    /// Ho et al.'s 35.7 M-parameter CIFAR-10 model.
    Cifar,
}

impl Preset {
    pub const ALL: [Preset; 4] = [Preset::Tiny, Preset::Small, Preset::Mnist, Preset::Cifar];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Small => "small",
            Preset::Mnist => "mnist",
            Preset::Cifar => "cifar",
        }
    }

    pub fn config(self) -> UNetConfig {
        match self {
            Preset::Tiny => UNetConfig::tiny(),
            Preset::Small => UNetConfig::small(),
            Preset::Mnist => UNetConfig::mnist(),
            Preset::Cifar => UNetConfig::cifar(),
        }
    }

    /// Side of the square images the preset is made for: tiny and small the 16×16 shapes,
    /// mnist the digits, cifar CIFAR-10.
    pub fn native_image_size(self) -> usize {
        match self {
            Preset::Tiny | Preset::Small => 16,
            Preset::Mnist => 28,
            Preset::Cifar => 32,
        }
    }

    /// Channels of the images the preset is made for.
    pub fn native_channels(self) -> usize {
        match self {
            Preset::Mnist => 1,
            Preset::Tiny | Preset::Small | Preset::Cifar => 3,
        }
    }

    /// "tiny, small, mnist or cifar", for messages.
    fn expected() -> String {
        let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
        let (last, rest) = names.split_last().expect("there are presets");
        format!("{} or {last}", rest.join(", "))
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no preset; its message lists the valid names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model preset `{name}` (expected {})", Preset::expected())]
pub struct UnknownPreset {
    pub name: String,
}

impl std::str::FromStr for Preset {
    type Err = UnknownPreset;

    fn from_str(s: &str) -> Result<Self, UnknownPreset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPreset {
                name: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_serde() {
        for p in Preset::ALL {
            assert_eq!(p.name().parse::<Preset>().unwrap(), p);
            assert_eq!(p.to_string(), p.name());
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
            assert_eq!(
                serde_json::from_str::<Preset>(&format!("\"{p}\"")).unwrap(),
                p
            );
        }
    }

    #[test]
    fn an_unknown_name_lists_the_valid_ones() {
        let err = "huge".parse::<Preset>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown model preset `huge` (expected tiny, small, mnist or cifar)"
        );
        let err = UNetConfig::preset("huge").unwrap_err().to_string();
        assert!(
            err.ends_with(": unknown model preset `huge` (expected tiny, small, mnist or cifar)"),
            "{err}"
        );
    }

    #[test]
    fn every_preset_fits_its_native_images() {
        for p in Preset::ALL {
            let mut cfg = p.config();
            cfg.in_channels = p.native_channels();
            cfg.validate(p.native_image_size()).unwrap();
        }
    }
}
