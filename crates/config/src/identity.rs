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
    pub fn training_identity(&self) -> BTreeMap<String, serde_json::Value> {
        self.keeping(|role| role == Role::Training).identity()
    }

    /// A short stable hash of the identity.
    pub fn config_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let canonical = serde_json::to_string(&self.identity()).expect("identity serialises");
        let digest = Sha256::digest(canonical.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}
