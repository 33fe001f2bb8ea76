//! The dashboard's HTTP routes, merged into the REST API (which refuses non-loopback clients
//! before any of these run):
//!
//! - `GET /` redirects to `/ui/`; `GET /ui/...` serves the embedded page (no token: it holds
//!   nothing but code);
//! - `GET /api/v1/ui/node`, `/api/v1/ui/history?after=<ms>`, `/api/v1/ui/deployments`,
//!   `/api/v1/ui/deployments/<id>`, `POST /api/v1/ui/deployments/<id>/follow` and `POST
//!   /api/v1/ui/codes` (a one-time code for `nunet dashboard`'s URL) answer JSON only with the
//!   token as `Authorization: Bearer <token>`;
//! - `POST /api/v1/ui/session` trades a one-time code for the token;
//! - every `/api/v1/ui` route answers only requests whose `Host` is a loopback name (a page on
//!   another site that rebinds its DNS name to 127.0.0.1 is refused before anything else),
//!   and its answers are never cached.

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use nunet_actor::{ActorError, ErrorKind};
use serde::Deserialize;
use serde_json::json;

use crate::{Dashboard, assets, views};

/// Policy of every dashboard response: its own scripts and styles only, no frames, no
/// referrer, no sniffing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes, with its state applied.
pub fn router(d: Dashboard) -> Router {
    let data = Router::new()
        .route("/api/v1/ui/node", get(node))
        .route("/api/v1/ui/history", get(history))
        .route("/api/v1/ui/deployments", get(deployments))
        .route("/api/v1/ui/deployments/{id}", get(deployment))
        .route("/api/v1/ui/deployments/{id}/follow", post(follow))
        .route("/api/v1/ui/codes", post(code))
        .layer(middleware::from_fn_with_state(d.clone(), authorized));
    let api = Router::new()
        .route("/api/v1/ui/session", post(session))
        .merge(data)
        .layer(middleware::from_fn(local_host));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| page(String::new())))
        .route("/ui/{*path}", get(|Path(p): Path<String>| page(p)))
        .merge(api)
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorKind::Rejected,
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn(headers))
        .with_state(d)
}

fn error(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": ActorError::new(kind, message)})),
    )
        .into_response()
}

/// An error of a behaviour the view read, with the HTTP status its kind means.
fn actor_error(e: ActorError) -> Response {
    let status = match e.kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Denied => StatusCode::FORBIDDEN,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unreachable => StatusCode::BAD_GATEWAY,
        ErrorKind::Rejected | ErrorKind::Failed => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (status, Json(json!({"error": e}))).into_response()
}

/// Whether a `Host` header names this machine's loopback (`localhost`, `127.x`, `[::1]`, with
/// or without a port).
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a `Host` that is not a loopback name; marks the answer as not to be cached.
async fn local_host(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !loopback_host(host) {
        return error(
            StatusCode::FORBIDDEN,
            ErrorKind::Denied,
            format!("the dashboard answers requests for localhost only, not Host {host:?}"),
        );
    }
    let mut r = next.run(req).await;
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn authorized(State(d): State<Dashboard>, req: Request, next: Next) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    if !d.token.admits(auth) {
        return error(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Denied,
            "no valid dashboard token: open the URL `nunet dashboard` prints (the daemon makes \
             a new token at every start)",
        );
    }
    next.run(req).await
}

async fn headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (k, v) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

async fn page(path: String) -> Response {
    let Some(a) = assets::get(&path) else {
        return error(
            StatusCode::NOT_FOUND,
            ErrorKind::NotFound,
            format!("no dashboard file {path}"),
        );
    };
    let cache = if a.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, a.content_type),
            (header::CACHE_CONTROL, cache),
        ],
        a.bytes,
    )
        .into_response()
}

async fn node(State(d): State<Dashboard>) -> Response {
    Json(views::node(&d.system).await).into_response()
}

async fn history(
    State(d): State<Dashboard>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let after = match q.get("after").map(|a| a.parse::<i64>()) {
        None => 0,
        Some(Ok(a)) => a,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorKind::Rejected,
                "after: not a time in Unix ms",
            );
        }
    };
    Json(json!({"every_ms": crate::SAMPLE_EVERY.as_millis() as u64, "samples": d.history.since(after)}))
        .into_response()
}

async fn deployments(State(d): State<Dashboard>) -> Response {
    match views::deployments(&d.system).await {
        Ok(l) => Json(json!({ "deployments": l })).into_response(),
        Err(e) => actor_error(e),
    }
}

async fn deployment(State(d): State<Dashboard>, Path(id): Path<String>) -> Response {
    match views::deployment(&d.system, &id).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => actor_error(e),
    }
}

/// A JSON body as `T` (an empty body is `T::default()`), or why it is not one.
fn body<T: serde::de::DeserializeOwned + Default>(b: &[u8], shape: &str) -> Result<T, String> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| format!("the body is not {shape}: {e}"))
}

fn bad_body(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, ErrorKind::Rejected, message)
}

async fn code(State(d): State<Dashboard>) -> Response {
    match d.codes.issue() {
        Ok(code) => Json(json!({
            "code": code,
            "expires_in_s": crate::auth::CODE_TTL.as_secs(),
        }))
        .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Failed,
            e.to_string(),
        ),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    #[serde(default)]
    code: String,
}

async fn session(State(d): State<Dashboard>, b: axum::body::Bytes) -> Response {
    let req: SessionRequest = match body(&b, "{\"code\": <code>}") {
        Ok(r) => r,
        Err(m) => return bad_body(m),
    };
    if !d.codes.redeem(&req.code) {
        return error(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Denied,
            "this code is unknown, used or older than a minute: run `nunet dashboard` again",
        );
    }
    Json(json!({ "token": d.token.as_str() })).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FollowRequest {
    #[serde(default)]
    allocation: Option<String>,
}

async fn follow(
    State(d): State<Dashboard>,
    Path(id): Path<String>,
    b: axum::body::Bytes,
) -> Response {
    let req: FollowRequest = match body(&b, "{\"allocation\": <name>}") {
        Ok(r) => r,
        Err(m) => return bad_body(m),
    };
    match views::follow(&d.system, &id, req.allocation).await {
        Ok(session) => Json(json!({
            "session": session,
            "url": format!("/api/v1/output/{session}"),
        }))
        .into_response(),
        Err(e) => actor_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        for h in [
            "localhost",
            "LOCALHOST:9999",
            "127.0.0.1",
            "127.0.0.1:9999",
            "127.8.9.1:1",
            "[::1]:9999",
            "[::1]",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "",
            "evil.example",
            "evil.example:9999",
            "localhost.evil.example",
            "10.0.0.1:9999",
            "[::2]:1",
            "0.0.0.0:9999",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }
}
