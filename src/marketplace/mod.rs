//! KooGallery's open APIs from the merchant's side: the signed client koogate calls them
//! with, and a mock marketplace that answers like them on this machine.

pub mod client;
pub mod mock;

pub use client::{Answer, ApiCode, Client, MarketError, OrderAnswer, Request, interpret};
