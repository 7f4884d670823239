//! Function discovery (DESIGN.md §2, §3): keeps `spec.aws.lambdaFunctions` of aws Upstreams
//! current with one shared ListFunctions sweep per account and region.
//!
//! `selection`, `functions` and `target` are pure; `aws` talks to AWS, `secrets` watches the
//! credentials Secrets, and `engine` owns the state and decides what to sweep and write.

pub mod aws;
pub mod engine;
pub mod functions;
pub mod secrets;
pub mod selection;
pub mod target;
