//! The dashboard's static files, embedded in the binary so a deployment is one file and nothing is read
//! from disk at run time.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// `/`, `/app.js` and `/app.css`; needs no state, so it merges into any router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(js))
        .route("/app.css", get(css))
}

async fn js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../../web/app.js"),
    )
}

async fn css() -> Response {
    static_file("text/css; charset=utf-8", include_str!("../../web/app.css"))
}

async fn index() -> Response {
    let mut r = static_file(
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    );
    // The dashboard loads nothing from elsewhere and inlines nothing: say so, so injected markup cannot run.
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// A file from the binary; `no-cache` so a new release's files are picked up on the next load.
pub fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
