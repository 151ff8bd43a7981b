//! The Bitbucket change-hook dialects, in one library:
//!
//! * [`bitbucketcloud`](cloud): Bitbucket Cloud webhooks;
//! * [`bitbucketserver`](server): Bitbucket Server (Data Center) webhooks in the
//!   shape of the "bitbucket-webhooks" plug-in;
//! * [`bitbucket`](legacy): Bitbucket's legacy "POST service".
//!
//! The first two share their options and request checks (`common`).

pub mod cloud;
mod common;
pub mod legacy;
pub mod server;

use buildmaster_plugin_api::export_plugin;

pub use cloud::BitbucketCloud;
pub use legacy::Bitbucket;
pub use server::BitbucketServer;

export_plugin! {
    name: "bitbucket",
    version: env!("CARGO_PKG_VERSION"),
    dialects: {
        "bitbucket" => Bitbucket,
        "bitbucketcloud" => BitbucketCloud,
        "bitbucketserver" => BitbucketServer,
    },
}
