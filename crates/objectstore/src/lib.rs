//! Objects of S3-compatible stores for allocations: [`transfer::stage`] downloads an input
//! (one object, or every object under a prefix) into a local directory before a workload
//! starts, and [`transfer::publish`] uploads the regular files a task left in a directory.
//! Requests are SigV4-presigned (`rusty-s3`, sans-IO) and sent with `ureq` over
//! connections that [`egress`] restricts to public addresses unless the operator allows an
//! endpoint; S3 error responses become typed [`StoreError`]s with the store's code and
//! message.
//!
//! It must not know about allocations, actors or executors: callers pass a location,
//! credentials, a directory and a byte budget. Credentials are never logged or put into an
//! error message.

pub mod egress;
mod store;
pub mod transfer;

pub use store::{ListingPage, MAX_LIST_PAGE, ObjectInfo, Store, StoreError};
