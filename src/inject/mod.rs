//! Kubernetes injection (docs/kubernetes.md): connd added to pod templates that opt in by
//! annotation. One transformation, [`pod::inject`], over a pod template (a Pod, or the
//! `spec.template` of a workload); two entry points call it: [`manifest`], the
//! `connd inject` command over a stream of YAML manifests, and [`webhook`], the mutating
//! admission webhook, which answers with the JSON Patch from a Pod to what `inject` prints.
//!
//! Boundary: the pod transformation knows annotations, containers and volumes, never YAML
//! streams or HTTP; `manifest` knows documents and kinds; `webhook` knows AdmissionReviews,
//! TLS and its listener (on `listen::conn`).

pub mod annotations;
pub mod manifest;
pub mod pod;
pub mod webhook;
pub mod yaml;

use crate::error::{Class, Classify};
use std::fmt;

/// The connd image that injected containers run when `--image` is not given.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/example/connd:", env!("CARGO_PKG_VERSION"));

/// What the transformation needs besides the pod: the settings of `inject` and `webhook`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The image of the containers connd adds (`--image`).
    pub image: String,
}

/// The object a pod template belongs to, as messages name it: `Deployment/shop/orders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: String,
    /// Empty when the manifest gives none (the namespace is then the one applied to).
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() { "<unnamed>" } else { &self.name };
        match self.namespace.as_str() {
            "" => write!(f, "{}/{name}", self.kind),
            ns => write!(f, "{}/{ns}/{name}", self.kind),
        }
    }
}

/// One thing wrong with a pod template: where (an annotation, a container, a volume),
/// what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `annotation connd.dev/mode`, `container app`, `volume connd-config`.
    pub at: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.at, self.message, self.fix)
    }
}

impl Problem {
    /// A problem `at` a place (`container app`, `spec.containers`), with its fix.
    pub fn new(at: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Problem {
        Problem { at: at.into(), message: message.into(), fix: fix.into() }
    }

    /// A problem with the annotation `name` (`connd.dev/mode`).
    pub fn annotation(name: &str, message: impl Into<String>, fix: impl Into<String>) -> Problem {
        Problem::new(format!("annotation {name}"), message, fix)
    }
}

/// A pod template connd refuses to inject, with every problem found in it. Exit 78.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {}", join(problems))]
pub struct InjectError {
    pub object: Object,
    pub problems: Vec<Problem>,
}

fn join(problems: &[Problem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Classify for InjectError {
    fn class(&self) -> Class {
        Class::Config
    }
}
