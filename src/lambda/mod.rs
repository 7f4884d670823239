//! Function discovery (docs/behaviour.md): keeps `spec.aws.lambdaFunctions` of aws Upstreams
//! current with one shared ListFunctions sweep per account and region.
//!
//! `selection`, `functions`, `target`, `problem` and `state` are pure (the state decides what
//! to sweep, write and report); `aws` talks to AWS, and `engine` is the thin loop that carries
//! the state's decisions out.

pub mod aws;
pub mod engine;
pub mod functions;
pub mod problem;
pub mod selection;
pub mod state;
pub mod target;
