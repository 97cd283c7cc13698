//! The kernel's Python environments: which one is active, what is in it, and the named ones
//! `switch_environment` may choose. One copy, owned by the kernel handle (below the tools), and
//! changed only together with the backend's interpreter.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::pyenv::{EnvInfo, EnvSource};

/// The active environment and the ones offered by name.
#[derive(Debug, Clone)]
pub struct Environments {
    /// Name of the active environment ("default" for the one the server started with).
    pub active: String,
    pub info: EnvInfo,
    /// Environments offered to the model by name (`--env NAME=PATH`, plus "default").
    pub named: BTreeMap<String, EnvSource>,
}

/// A successful switch: the new environment, and how long the kernel took to restart in it.
#[derive(Debug, Clone)]
pub struct Switched {
    pub info: EnvInfo,
    pub took: Duration,
}

/// Why a switch did not happen (typed; the tools word it).
#[derive(Debug, Clone)]
pub enum SwitchError {
    /// No environment by that name; these are the names there are.
    Unknown { known: Vec<String> },
    /// The environment could not be resolved (missing, not a Python, no ipykernel...).
    Unusable { reason: String },
    /// No kernel would start in it; `restored` says whether the previous one came back.
    StartFailed {
        reason: String,
        restored: Result<(), String>,
    },
}
