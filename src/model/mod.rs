//! The bottom of the crate (docs/architecture.md, "model"): how objects are named and keyed, which
//! Upstreams are ours, the field managers we write under, the label and annotation names that
//! more than one part reads, and the fixed sets of Event reasons and metric labels. It imports
//! nothing from the rest of the crate, so every other part can use it without a cycle.

mod key;
mod names;
mod reasons;

pub use key::{ObjectKey, Scope, SecretKey, ServiceKey, UpstreamKey};
pub use names::{
    is_owned, DISCOVERED_BY_LABEL, DISCOVERY_MANAGERS, FIELD_MANAGER, FUNCTION_DISCOVERY_LABEL,
    FUNCTION_FILTER_ANNOTATION, GLOO_DISCOVERY_MANAGER, KUBERNETES_PLUGIN, LAMBDA_FIELD_MANAGER,
    LAST_APPLIED_ANNOTATION,
};
pub use reasons::{ErrorKind, EventReason, SkipReason};
