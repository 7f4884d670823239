//! upstream-discovery: keeps Gloo `Upstream` resources in step with Kubernetes Services and
//! AWS Lambda functions. See `DESIGN.md` for the behaviour and the architecture.

pub mod apply;
pub mod config;
pub mod crd;
pub mod daemon;
pub mod engine;
pub mod events;
pub mod http;
pub mod lambda;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod render;
pub mod selector;
pub mod source;
pub mod translate;
