//! The REST data API (`/api/v2`), independent of the HTTP framework: callers
//! pass the path, the decoded query pairs and the `Accept` header, and send
//! back the [`ApiResponse`].

mod changes;
mod engine;
pub mod query;

pub use changes::{changes_endpoint, ApiResponse};
pub use engine::Engine;
