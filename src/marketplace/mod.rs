//! KooGallery's open APIs from the merchant's side: the signed client koogate calls them
//! with, and a mock marketplace that answers like them on this machine. No store and no
//! decisions: what koogate does with an answer is the application layer's and the jobs'.

pub mod client;
pub mod mock;

pub use client::{Answer, ApiCode, Client, MarketError, OrderAnswer, Request, interpret};
