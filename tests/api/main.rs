//! The integration tests, built as one binary so that they share one throwaway
//! PostgreSQL. Each drives the real server over HTTP with requests signed by the same
//! protocol module the server uses.

mod admin;
mod api;
mod browser;
mod cli;
mod connections;
mod crash;
mod deploy;
mod events;
mod evidence;
mod fuzz_corpus;
mod helpers;
mod inputs;
mod jobs;
mod license_code;
mod logs;
mod marketplace;
mod metrics;
mod mock_market;
mod online_license;
mod orders;
mod outages;
mod postgres;
mod provisioning;
mod queue;
mod receiver;
mod round_trips;
mod saas_v1;
mod saas_v2;
mod secrets;
mod simulate;
mod store;
mod usage;
