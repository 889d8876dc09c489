//! A checkpoint is one safetensors blob: named tensors plus string metadata (configs as JSON,
//! counters). Core only converts to and from bytes; writing files is the runner's business.

use candle_core::{Device, Tensor};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use crate::error::{Error, Result};

/// Format version written into every checkpoint.
pub const FORMAT: &str = "1";

#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        meta.insert("ddlab.format".into(), FORMAT.into());
        // Sorted, so the same state always serialises to the same bytes.
        let mut items: Vec<(&String, &Tensor)> = self.tensors.iter().collect();
        items.sort_by(|a, b| a.0.cmp(b.0));
        let items: Vec<(String, Tensor)> = items
            .into_iter()
            .map(|(k, t)| t.to_device(&Device::Cpu).map(|t| (k.clone(), t)))
            .collect::<candle_core::Result<_>>()?;
        safetensors::serialize(items, Some(meta))
            .map_err(|e| Error::Checkpoint(format!("cannot serialise: {e}")))
    }

    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::Checkpoint(format!("not a safetensors file ({e})")))?;
        let metadata: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        match metadata.get("ddlab.format").map(String::as_str) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(Error::Checkpoint(format!(
                    "format version {other} is not supported (expected {FORMAT})"
                )));
            }
            None => {
                return Err(Error::Checkpoint(
                    "this safetensors file was not written by ddlab (no ddlab.format)".into(),
                ));
            }
        }
        let tensors = candle_core::safetensors::load_buffer(bytes, device)?;
        Ok(Self { tensors, metadata })
    }

    pub fn set_json<T: Serialize>(&mut self, key: &str, value: &T) -> Result<()> {
        let s = serde_json::to_string(value)
            .map_err(|e| Error::Checkpoint(format!("cannot encode `{key}`: {e}")))?;
        self.metadata.insert(key.into(), s);
        Ok(())
    }

    pub fn get(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::Checkpoint(format!("metadata `{key}` is missing")))
    }

    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        serde_json::from_str(self.get(key)?)
            .map_err(|e| Error::Checkpoint(format!("metadata `{key}` is malformed: {e}")))
    }

    pub fn get_parsed<T: FromStr>(&self, key: &str) -> Result<T> {
        self.get(key)?
            .parse()
            .map_err(|_| Error::Checkpoint(format!("metadata `{key}` is malformed")))
    }
}
