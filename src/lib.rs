//! upstream-discovery: keeps Gloo `Upstream` resources in step with Kubernetes Services and
//! AWS Lambda functions. See `DESIGN.md` for the behaviour and the architecture.
//!
//! Layers, bottom first; a module imports only from its own layer or those below it (checked
//! by `tests/architecture.rs`):
//! 1. `model`: keys, ownership, field managers, names, Event reasons and metric labels;
//! 2. `crd`, `selector` (the types), `reconcile`, the kit both loops are built from,
//!    `health`, the loops' liveness and readiness records, and `admission`, which tells a
//!    refusal by admission control from the API server's message;
//! 3. `translate`, then `plan`: pure;
//! 4. the pure states: `services::state`, `lambda::{selection, functions, target, problem,
//!    state}`;
//! 5. `config`: flags resolved once;
//! 6. the parts that touch the network: `source`, `apply`, `events`, `leader`, `metrics`,
//!    `http`, `lambda::aws`;
//! 7. the two thin loops, `services` and `lambda::engine`;
//! 8. `daemon`, `render` and `preview` (`diff`, `explain`), wired by `main.rs`.

pub mod admission;
pub mod apply;
pub mod config;
pub mod crd;
pub mod daemon;
pub mod events;
pub mod health;
pub mod http;
pub mod lambda;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod preview;
pub mod reconcile;
pub mod render;
pub mod selector;
pub mod services;
pub mod source;
pub mod translate;
