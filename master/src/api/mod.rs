//! The REST data API (`/api/v2`), independent of the HTTP framework: callers
//! pass the path, the decoded query pairs and the `Accept` header, and send
//! back the [`ApiResponse`], whole or streamed.

mod engine;
pub mod query;
mod response;
mod rpc;
pub use rpc::Permit;

pub use engine::Engine;
pub use response::{ApiResponse, Body, Chunks};

#[cfg(test)]
mod tests;
