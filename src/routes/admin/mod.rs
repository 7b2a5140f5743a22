//! `/admin` on the internal listener (merchant-api.md §7): server-rendered operator pages
//! over the same service layer as the CLI (`app::ops`). A login with the API token
//! starts a session (an `HttpOnly`, `SameSite=Strict` cookie scoped to `/admin`); every
//! POST carries the session's CSRF token; every answer carries a strict
//! Content-Security-Policy, so that nothing but koogate's own script (htmx, vendored)
//! ever runs in these pages.

mod mask;
mod pages;
pub mod session;

use crate::app::AppState;
use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use session::COOKIE;
use subtle::ConstantTimeEq;

/// The header htmx sends the CSRF token in (set with `hx-headers` on the page's body).
const CSRF_HEADER: &str = "x-csrf-token";

/// The form field plain (script-less) forms send the CSRF token in.
const CSRF_FIELD: &str = "csrf";

/// Only koogate's own files: no inline script or style, no frames, forms only to itself.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'; object-src 'none'";

/// The largest form a POST may send: the admin forms carry a token and an id or two.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// htmx, minified, with its licence header (Zero-Clause BSD); vendored, never from a CDN.
const HTMX: &[u8] = include_bytes!("../../../templates/assets/htmx.min.js");
const CSS: &[u8] = include_bytes!("../../../templates/assets/admin.css");

/// The routes under `/admin`, nested so that an unknown admin path gets this router's
/// 404 (with the security headers) rather than the management API's.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/", get(pages::overview))
        .route("/instances", get(pages::instances))
        .route("/instances/{id}", get(pages::instance))
        .route("/orders", get(pages::orders))
        .route("/orders/{id}", get(pages::order))
        .route("/orders/{id}/evidence", get(pages::evidence))
        .route("/orders/{id}/refetch", post(pages::refetch))
        .route("/callbacks/{id}", get(pages::callback))
        .route("/jobs/{id}/retry", post(pages::retry_job))
        .route("/jobs/retry-failed", post(pages::retry_all_jobs))
        .route("/events/{id}/retry", post(pages::retry_event))
        .route("/events/retry-failed", post(pages::retry_all_events))
        .route("/endpoint/resume", post(pages::resume))
        .route("/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let admin = Router::new()
        .route("/login", get(login_page).post(login))
        .route("/assets/htmx.min.js", get(htmx))
        .route("/assets/admin.css", get(css))
        .merge(protected)
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::map_response(security_headers))
        .with_state(state);
    Router::new().nest("/admin", admin)
}

/// The headers every admin answer carries.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn htmx() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        HTMX,
    )
        .into_response()
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

/// The session id the request's cookie carries, if any.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn htmx_request(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

/// Lets a request through with a live session, and a POST only with its CSRF token
/// (the `X-CSRF-Token` header or the `csrf` form field). Without a session a page is
/// redirected to the login and anything else is 401; with a wrong token, 403. Neither
/// says anything more.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let now_ms = (state.services.clock)();
    let session = session_id(request.headers()).and_then(|id| state.admin.get(id, now_ms));
    let Some(session) = session else {
        if request.method() == Method::GET && !htmx_request(request.headers()) {
            return Redirect::to("/admin/login").into_response();
        }
        return (StatusCode::UNAUTHORIZED, "log in first\n").into_response();
    };
    let mut request = request;
    if request.method() == Method::POST {
        let presented = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "form too large\n").into_response();
        };
        let field = form_urlencoded::parse(&bytes)
            .find(|(name, _)| name == CSRF_FIELD)
            .map(|(_, value)| value.into_owned());
        if !presented
            .or(field)
            .is_some_and(|t| session.csrf_matches(&t))
        {
            return (StatusCode::FORBIDDEN, "missing or wrong CSRF token\n").into_response();
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    problem: Option<&'static str>,
}

fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, "admin page did not render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page did not render\n",
            )
                .into_response()
        }
    }
}

async fn login_page(State(state): State<AppState>) -> Response {
    render(&LoginPage {
        problem: state
            .api_tokens
            .0
            .is_empty()
            .then_some("No API token is configured: set KOOGATE_API_TOKEN to use these pages."),
    })
}

#[derive(serde::Deserialize)]
struct Login {
    token: String,
}

/// Whether the request reached the proxy in front of koogate over https, or the
/// settings say it always does.
fn over_https(state: &AppState, headers: &HeaderMap) -> bool {
    state.admin_secure_cookie
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// Checks the token as the API does (every configured token, in constant time) and
/// starts a session.
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(login): axum::Form<Login>,
) -> Response {
    let mut ok = subtle::Choice::from(0);
    for token in &state.api_tokens.0 {
        ok |= token
            .expose_secret()
            .as_bytes()
            .ct_eq(login.token.as_bytes());
    }
    if state.api_tokens.0.is_empty() || !bool::from(ok) {
        let mut response = render(&LoginPage {
            problem: Some("That is not the API token."),
        });
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    let id = state.admin.start((state.services.clock)());
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/admin; Max-Age={}{}",
        state.admin.lifetime().as_secs(),
        if over_https(&state, &headers) {
            "; Secure"
        } else {
            ""
        }
    );
    #[expect(clippy::expect_used, reason = "a hex id and fixed ASCII text")]
    let cookie = HeaderValue::from_str(&cookie).expect("a valid header value");
    let mut response = Redirect::to("/admin").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        state.admin.end(id);
    }
    let mut response = Redirect::to("/admin/login").into_response();
    let expired = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/admin; Max-Age=0");
    #[expect(clippy::expect_used, reason = "fixed ASCII text")]
    let expired = HeaderValue::from_str(&expired).expect("a valid header value");
    response.headers_mut().insert(header::SET_COOKIE, expired);
    response
}
