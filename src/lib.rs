//! upstream-discovery: keeps Gloo `Upstream` resources in step with Kubernetes Services and
//! AWS Lambda functions. The behaviour is described in `docs/behaviour.md`, the architecture
//! in `docs/architecture.md`.
//!
//! Layers, bottom first; a module imports only from its own layer or those below it, and a
//! module not listed takes the layer of its longest listed prefix (`tests/architecture.rs`
//! reads this list and checks it):
//! 1. `model`: keys, ownership, field managers, names, Event reasons and metric labels;
//! 2. `crd`, `selector` (the types), `compact` (a Service trimmed to what translation reads),
//!    `credentials` (the AWS keys a Secret holds), `reconcile`, the kit both loops are built
//!    from, `health`, the loops' liveness and readiness records, and `admission`, which tells
//!    a refusal by admission control from the API server's message;
//! 3. `translate`: pure;
//! 4. `plan`: pure;
//! 5. the pure states: `services::state`, `services::compact`, `services::grant_cache`, and
//!    all of function discovery but its network client and its loop, `lambda`
//!    (`lambda::{selection, functions, target, problem, state}`);
//! 6. `config`: flags resolved once;
//! 7. the parts that touch the network: `source`, `apply`, `events`, `leader`, `metrics`,
//!    `http`, `lambda::aws`;
//! 8. the two thin loops, `services` and `lambda::engine`;
//! 9. `daemon`, `render` and `preview` (diff and explain), wired by `main.rs`.

pub mod admission;
pub mod apply;
pub mod compact;
pub mod config;
pub mod crd;
pub mod credentials;
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
