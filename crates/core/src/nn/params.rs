//! Named trainable parameters. Like candle-nn's `VarBuilder` (layers take a builder and
//! `pp("name")` scopes it, so names mirror the checkpoint), but initialised from our own seeded
//! [`Rng`]: candle's CPU generator cannot be seeded, and reproducible runs need that.

use candle_core::{DType, Device, Shape, Tensor, Var};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// How a fresh parameter is filled.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Zeros,
    Ones,
    /// U(−bound, bound): PyTorch's default for conv and linear layers uses 1/√fan_in.
    Uniform(f64),
}

/// The parameters of one model, in creation order (the order the optimiser state follows).
#[derive(Clone, Default)]
pub struct ParamStore {
    inner: Arc<Mutex<Vec<(String, Var)>>>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn vars(&self) -> Vec<Var> {
        self.inner
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.inner.lock().unwrap().clone()
    }

    pub fn num_params(&self) -> usize {
        self.inner
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    fn push(&self, name: String, var: Var) -> Result<()> {
        let mut g = self.inner.lock().unwrap();
        if g.iter().any(|(n, _)| n == &name) {
            return Err(Error::InvalidModel(format!(
                "parameter `{name}` defined twice"
            )));
        }
        g.push((name, var));
        Ok(())
    }

    /// Copies values by name from `tensors` (e.g. a checkpoint) into these parameters.
    /// `prefix` is prepended to each parameter's name when looking it up.
    pub fn load(&self, tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        for (name, var) in self.inner.lock().unwrap().iter() {
            let key = format!("{prefix}{name}");
            let t = tensors
                .get(&key)
                .ok_or_else(|| Error::Checkpoint(format!("tensor `{key}` is missing")))?;
            if t.shape() != var.shape() {
                return Err(Error::Checkpoint(format!(
                    "tensor `{key}` has shape {:?}, the model expects {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// Current values keyed by `prefix + name`.
    pub fn tensors(&self, prefix: &str) -> HashMap<String, Tensor> {
        self.inner
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| (format!("{prefix}{n}"), v.as_tensor().clone()))
            .collect()
    }
}

/// Creates parameters under a dotted name prefix.
#[derive(Clone)]
pub struct ParamBuilder {
    store: ParamStore,
    prefix: String,
    rng: Rc<RefCell<Rng>>,
    device: Device,
}

impl ParamBuilder {
    pub fn new(store: &ParamStore, seed: u64, device: &Device) -> Self {
        Self {
            store: store.clone(),
            prefix: String::new(),
            rng: Rc::new(RefCell::new(Rng::new(seed, crate::rng::streams::INIT))),
            device: device.clone(),
        }
    }

    /// A builder whose names are scoped under `name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            prefix,
            ..self.clone()
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn get(&self, shape: impl Into<Shape>, name: &str, init: Init) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.elem_count();
        let values: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Uniform(bound) => {
                let mut rng = self.rng.borrow_mut();
                (0..n)
                    .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                    .collect()
            }
        };
        let t = Tensor::from_vec(values, shape, &self.device)?.to_dtype(DType::F32)?;
        let var = Var::from_tensor(&t)?;
        let full = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        self.store.push(full, var.clone())?;
        Ok(var.as_tensor().clone())
    }
}
