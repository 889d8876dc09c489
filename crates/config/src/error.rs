//! The config crate's error: one sentence a user can act on, already naming the file, line
//! and key where there is one.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A value or combination of values no run can have.
    #[error("{0}")]
    Invalid(String),
    /// A problem in a sweep spec, a config file or a flag, located for the user.
    #[error("{0}")]
    Spec(String),
}
