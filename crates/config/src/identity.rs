//! A run's identity: the keys that differ from the defaults, and a short hash of them. Runs
//! that share the training part of their identity can share one training.

use std::collections::BTreeMap;

use crate::keys::{Role, RunConfig};

impl RunConfig {
    /// The keys that differ from the defaults: a run's identity. Adding a new key with a
    /// default later leaves the identity of existing runs unchanged.
    pub fn identity(&self) -> BTreeMap<String, serde_json::Value> {
        let mine = serde_json::to_value(self).expect("config serialises");
        let base = serde_json::to_value(RunConfig::default()).expect("config serialises");
        let (serde_json::Value::Object(mine), serde_json::Value::Object(base)) = (mine, base)
        else {
            unreachable!("a struct serialises to an object")
        };
        mine.into_iter()
            .filter(|(k, v)| base.get(k) != Some(v))
            .collect()
    }

    /// The keys that decide the trained weights: the identity with every key of another role
    /// at its default. Runs that share it can share one training.
    /// `variance` is a sampling key except at `learned`, where it shapes the network and its
    /// loss: then it joins the training identity.
    pub fn training_identity(&self) -> BTreeMap<String, serde_json::Value> {
        let mut training = self.keeping(|role| role == Role::Training);
        if self.learns_variance() {
            training.variance = self.variance;
        }
        training.identity()
    }

    /// Whether the network learns Σ_θ (variance = "learned").
    pub fn learns_variance(&self) -> bool {
        self.variance == ddlab_core::sampler::DdpmVariance::Learned
    }

    /// A short stable hash of the identity.
    pub fn config_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let canonical = serde_json::to_string(&self.identity()).expect("identity serialises");
        let digest = Sha256::digest(canonical.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ddlab_core::sampler::DdpmVariance;

    #[test]
    fn a_learned_variance_is_a_training_of_its_own() {
        let fixed = RunConfig::default();
        let large = RunConfig {
            variance: DdpmVariance::Beta,
            ..RunConfig::default()
        };
        let learned = RunConfig {
            variance: DdpmVariance::Learned,
            ..RunConfig::default()
        };
        // β̃ and β sample one training; a learned Σ needs its own network.
        assert_eq!(fixed.training_identity(), large.training_identity());
        assert_ne!(fixed.training_identity(), learned.training_identity());
        let resolved = learned.resolve().unwrap();
        assert!(resolved.model.learn_sigma);
        assert!(!fixed.resolve().unwrap().model.learn_sigma);
    }
}
