//! A minimal webhook receiver for benchmarks and for trying koogate's events: it checks
//! each delivery with the Standard Webhooks reference crate, answers 204, and prints how
//! many deliveries it accepted and at what rate.
//!
//! ```sh
//! cargo run --release --example webhook_receiver -- 127.0.0.1:9000 whsec_…
//! ```

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    let Some(secret) = args.next() else {
        eprintln!("usage: webhook_receiver ADDR whsec_SECRET");
        std::process::exit(2);
    };
    let webhook = Arc::new(standardwebhooks::Webhook::new(&secret).unwrap_or_else(|e| {
        eprintln!("bad secret: {e}");
        std::process::exit(2)
    }));
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    let app = axum::Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: Bytes| {
            let webhook = webhook.clone();
            let counter = counter.clone();
            async move {
                if webhook.verify(&body, &headers).is_err() {
                    return StatusCode::BAD_REQUEST;
                }
                counter.fetch_add(1, Ordering::Relaxed);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .unwrap_or_else(|e| {
            eprintln!("cannot listen on {listen}: {e}");
            std::process::exit(2)
        });
    eprintln!("receiving on http://{listen}/");
    tokio::spawn(report(accepted));
    let _ = axum::serve(listener, app).await;
}

/// Prints the deliveries accepted between the first and the last one of each burst.
async fn report(accepted: Arc<AtomicU64>) {
    let mut first: Option<(Instant, u64)> = None;
    let mut last = (Instant::now(), 0);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = accepted.load(Ordering::Relaxed);
        if now != last.1 {
            first.get_or_insert((Instant::now(), last.1));
            last = (Instant::now(), now);
        } else if let Some((start, base)) = first.take() {
            let secs = last.0.duration_since(start).as_secs_f64().max(0.001);
            println!(
                "{} deliveries in {secs:.2} s: {:.0} per second",
                now - base,
                (now - base) as f64 / secs
            );
        }
    }
}
