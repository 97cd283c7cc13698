//! The kernel's Python environments: which one is active, what is in it, and the named ones
//! `switch_environment` may choose. One copy, owned by the kernel handle (below the tools), and
//! changed only together with the backend's interpreter.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{KernelHandle, Restarted};
use crate::error::KernelError;
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
    /// It is the environment in use already: nothing was restarted (restart_kernel does).
    AlreadyActive,
}

/// The handle's environment state: the environments (one copy, here below the tools) and why
/// there is no usable interpreter (the managed environment failed to be created).
#[derive(Default)]
pub(super) struct EnvState {
    envs: std::sync::RwLock<Option<Environments>>,
    error: std::sync::Mutex<Option<String>>,
}

/// The handle's environment side: which interpreter its kernels run, and switching it.
impl KernelHandle {
    /// Sets the environments this handle's kernels run in (once, when the server is built).
    pub fn set_environments(&self, envs: Environments) {
        if let Ok(mut e) = self.env.envs.write() {
            *e = Some(envs);
        }
    }

    /// The environments: the active one and the named ones (`None` before they were set).
    pub fn environments(&self) -> Option<Environments> {
        self.env
            .envs
            .read()
            .map(|e| e.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// What is in the active environment.
    pub fn env_info(&self) -> Option<EnvInfo> {
        self.environments().map(|e| e.info)
    }

    /// Replaces what is known about the active environment (after a first-run set-up).
    pub fn set_env_info(&self, info: EnvInfo) {
        if let Ok(mut e) = self.env.envs.write() {
            if let Some(e) = e.as_mut() {
                e.info = info;
            }
        }
    }

    /// When the active environment was unusable, resolves it again (it may have been fixed
    /// meanwhile) and points the backend at it: `Ok(true)` when it changed, `Ok(false)` when
    /// nothing was wrong, `Err` with the reason (in words) when it is still unusable.
    pub async fn recheck_environment(&self) -> Result<bool, String> {
        if self.env_error().is_none() {
            return Ok(false);
        }
        let source = self
            .environments()
            .and_then(|e| e.named.get(&e.active).cloned())
            .ok_or_else(|| "no environment is configured".to_owned())?;
        match crate::pyenv::resolve(&source).await {
            Ok(info) => {
                self.set_python(info.python.clone(), info.paths.clone());
                self.set_env_error(None);
                self.set_env_info(info);
                Ok(true)
            }
            Err(e) => {
                let reason = crate::pyenv::explain(&e);
                self.set_env_error(Some(reason.clone()));
                Err(reason)
            }
        }
    }

    /// Restarts the kernel in the environment named `name`. On failure the previous
    /// environment is started again, so the session is not left without a kernel.
    pub async fn switch_environment(&self, name: &str) -> Result<Switched, SwitchError> {
        let envs = self
            .environments()
            .ok_or_else(|| SwitchError::Unknown { known: Vec::new() })?;
        let Some(source) = envs.named.get(name).cloned() else {
            return Err(SwitchError::Unknown {
                known: envs.named.keys().cloned().collect(),
            });
        };
        if envs.active == name {
            return Err(SwitchError::AlreadyActive);
        }
        let info = crate::pyenv::resolve(&source)
            .await
            .map_err(|e| SwitchError::Unusable {
                reason: e.to_string(),
            })?;
        match self
            .switch_python(info.python.clone(), info.paths.clone())
            .await
        {
            Ok(took) => {
                if let Ok(mut e) = self.env.envs.write() {
                    if let Some(e) = e.as_mut() {
                        e.active = name.to_owned();
                        e.info = info.clone();
                    }
                }
                Ok(Switched { info, took })
            }
            Err(e) => {
                let back = self
                    .switch_python(envs.info.python.clone(), envs.info.paths.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e2| e2.to_string());
                Err(SwitchError::StartFailed {
                    reason: e.to_string(),
                    restored: back,
                })
            }
        }
    }

    /// Sets the interpreter once the environment is ready (first run), without a restart.
    pub fn set_python(&self, python: PathBuf, paths: Vec<PathBuf>) {
        self.backend.set_python(python, paths);
    }

    /// Records why there is no usable interpreter (every later call reports it), or clears it.
    pub fn set_env_error(&self, reason: Option<String>) {
        if let Ok(mut e) = self.env.error.lock() {
            *e = reason;
        }
    }

    /// Why there is no usable interpreter, if that is the case.
    pub fn env_error(&self) -> Option<String> {
        self.env.error.lock().ok().and_then(|e| e.clone())
    }

    /// Switches to another interpreter and restarts the kernel in it. `paths` are the folders
    /// that interpreter reads from; the sandbox must let the new kernel read them.
    pub async fn switch_python(
        &self,
        python: PathBuf,
        paths: Vec<PathBuf>,
    ) -> Result<Duration, KernelError> {
        if !self.backend.set_python(python, paths) {
            return Err(KernelError::Unavailable {
                reason: crate::error::Unavailable::InterpreterNotOurs,
            });
        }
        match self.restart().await? {
            Restarted::Fresh { took } | Restarted::Reattached { took } => Ok(took),
        }
    }
}
