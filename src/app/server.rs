//! The public listener: an HTTP/1.1 accept loop that an anonymous sender cannot take down.
//! A connection must send its request head in time and may not stay idle for long, the
//! number of open connections is capped, a client that half-closes after a complete
//! request still gets its answer, and a graceful stop closes idle connections at once
//! while requests in flight get the callback deadline, no more.

use crate::protocol::codes::ResultCode;
use crate::protocol::reply::Reply;
use crate::protocol::signature;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use secrecy::{ExposeSecret, SecretString};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What the accept loop allows each connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request head must arrive whole within this, counted from the connection's first
    /// byte or, on a new connection, from its opening.
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request under way is closed after this.
    pub keep_alive_timeout: Duration,
    /// Open connections at most; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long requests in flight may still take once a graceful stop begins.
    pub drain: Duration,
}

/// Raises the soft limit of open files to the hard limit and returns it, so that the
/// connection cap, not the operating system's default of often 1,024, decides how many
/// clients are served.
pub fn raise_open_file_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, closes
/// idle connections, and waits for the requests in flight for `limits.drain` at most.
/// `key` signs the answer to a request head that did not arrive in time.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    key: Option<SecretString>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(());
    let late_head = Arc::new(late_head_answer(key.as_ref()));
    let service = TowerToHyperService::new(router);
    let mut connections = JoinSet::new();
    let mut was_full = false;
    tokio::pin!(shutdown);
    loop {
        // Taking a slot before accepting leaves the connections over the cap in the
        // kernel's backlog, where they cost no file descriptor.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        // Said once each time the cap is reached, not once per connection of a flood.
        let full = slots.available_permits() == 0;
        if full && !was_full {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached: new connections wait"
            );
        }
        was_full = full;
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::error!(%error, "could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = serve_connection(
            stream,
            service.clone(),
            limits.clone(),
            stop_rx.clone(),
            late_head.clone(),
        );
        connections.spawn(async move {
            connection.await;
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    drop(stop_tx);
    let drained = tokio::time::timeout(limits.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            cut_off = connections.len(),
            "connections still busy when the stop's deadline passed are closed"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// The signed 408 sent to a connection whose request head did not arrive in time, as raw
/// HTTP/1.1 bytes: hyper itself would only close the connection.
fn late_head_answer(key: Option<&SecretString>) -> Vec<u8> {
    let body = Reply::new(
        ResultCode::InvalidParam,
        "request head did not arrive in time",
    )
    .to_bytes();
    let mut head = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json;charset=UTF-8\r\n\
         content-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(key) = key {
        let sign = signature::body_sign(key.expose_secret(), &body);
        head.push_str(&format!("{}: {sign}\r\n", crate::routes::BODY_SIGN));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// What a connection is doing, shared by its socket, its service and its timer.
#[derive(Default)]
struct Activity {
    /// Requests handed to the router and not yet answered.
    in_flight: AtomicUsize,
    /// Whether a byte arrived since the last answer (a request head is under way).
    reading: AtomicBool,
    changed: Notify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// A request is being served: the callback deadline governs.
    Busy,
    /// Kept alive between requests.
    Idle,
}

impl Activity {
    fn phase(&self) -> Phase {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            Phase::Busy
        } else if self.reading.load(Ordering::Acquire) {
            Phase::Head
        } else {
            Phase::Idle
        }
    }
}

/// The socket, noting the first byte of each request so that the timer can tell a head
/// under way from an idle connection.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let activity = &this.activity;
        if buf.filled().len() > before
            && activity.in_flight.load(Ordering::Acquire) == 0
            && !activity.reading.swap(true, Ordering::AcqRel)
        {
            activity.changed.notify_one();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The router, counting the requests in flight on its connection.
#[derive(Clone)]
struct Counted {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

/// Marks the end of a request when dropped, answered or cut off.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.reading.store(false, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

type Request = hyper::Request<hyper::body::Incoming>;
type Response = axum::response::Response;

impl hyper::service::Service<Request> for Counted {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn call(&self, request: Request) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        self.activity.changed.notify_one();
        let guard = InFlight(self.activity.clone());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(guard);
            answer
        })
    }
}

/// Serves one connection until it closes, times out, or the server stops.
async fn serve_connection(
    stream: TcpStream,
    service: TowerToHyperService<Router>,
    limits: Limits,
    mut stop: watch::Receiver<()>,
    late_head: Arc<Vec<u8>>,
) {
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let service = Counted {
        inner: service,
        activity: activity.clone(),
    };
    let mut connection = http1::Builder::new()
        .timer(TokioTimer::new())
        // The timer below owns both timeouts: hyper's own header timer also runs while a
        // kept-alive connection waits, and it closes without an answer.
        .header_read_timeout(None)
        .half_close(true)
        .serve_connection(io, service);
    // A new connection must send its head in time, as if its first byte had come.
    let mut phase = Phase::Head;
    let mut since = Instant::now();
    let mut closing = false;
    loop {
        let limit = match phase {
            Phase::Head => Some(limits.header_read_timeout),
            Phase::Idle => Some(limits.keep_alive_timeout),
            Phase::Busy => None,
        };
        let timer = async {
            match limit {
                Some(limit) => tokio::time::sleep_until(since + limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut connection => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = activity.changed.notified() => {
                let now = activity.phase();
                if now != phase {
                    phase = now;
                    since = Instant::now();
                }
            }
            () = timer => {
                if phase == Phase::Head {
                    tracing::debug!("request head not received in time");
                    let mut stream = connection.into_parts().io.into_inner().stream;
                    let _ = tokio::time::timeout(limits.header_read_timeout, async {
                        let _ = stream.write_all(&late_head).await;
                        let _ = stream.shutdown().await;
                    })
                    .await;
                    return;
                }
                if closing {
                    return;
                }
                // Idle: hyper closes an idle connection at once when asked to stop.
                Pin::new(&mut connection).graceful_shutdown();
                closing = true;
            }
            _ = stop.changed(), if !closing => {
                // Idle connections close now; a request in flight is answered first.
                Pin::new(&mut connection).graceful_shutdown();
                closing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let raised = raise_open_file_limit().expect("limit raised");
        let (soft, hard) = rlimit::Resource::NOFILE.get().expect("limit read");
        assert_eq!(soft, raised, "the limit in force is the one reported");
        #[cfg(target_os = "linux")]
        assert_eq!(
            soft, hard,
            "Linux lets a process raise its soft limit to the hard one"
        );
    }
}
