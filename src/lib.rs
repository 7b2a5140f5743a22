//! koogate: the merchant-side integration server for Huawei Cloud KooGallery.

// Code outside the tests may not panic on a missing value or an index out of range: each
// invariant that allows one says so where it is used, with `#[expect(…, reason = …)]`
// (clippy.toml allows them in tests, where a panic is how a test fails).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod app;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod jobs;
pub mod marketplace;
pub mod metrics;
pub mod protocol;
pub mod routes;
pub mod simulate;
pub mod store;
pub mod telemetry;
