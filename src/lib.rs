//! koogate: the merchant-side integration server for Huawei Cloud KooGallery.

pub mod app;
pub mod bench;
pub mod cli;
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
