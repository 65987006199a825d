//! The dashboard's static files, embedded in the binary so a deployment is one file and nothing is read
//! from disk at run time.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The dashboard's ES modules, served at `/js/<name>`. A fixed table: a name not in it is not a route, so
/// it gets the same 404 as any other unknown path. A new file in web/js/ must be added here (a test checks).
const MODULES: &[(&str, &str)] = &[
    ("api.js", include_str!("../../web/js/api.js")),
    ("detail.js", include_str!("../../web/js/detail.js")),
    ("diff.js", include_str!("../../web/js/diff.js")),
    ("dom.js", include_str!("../../web/js/dom.js")),
    ("export.js", include_str!("../../web/js/export.js")),
    ("facets.js", include_str!("../../web/js/facets.js")),
    ("filters.js", include_str!("../../web/js/filters.js")),
    ("hooks.js", include_str!("../../web/js/hooks.js")),
    ("integrity.js", include_str!("../../web/js/integrity.js")),
    ("labels.js", include_str!("../../web/js/labels.js")),
    ("list.js", include_str!("../../web/js/list.js")),
    ("live.js", include_str!("../../web/js/live.js")),
    ("main.js", include_str!("../../web/js/main.js")),
    ("signin.js", include_str!("../../web/js/signin.js")),
    ("state.js", include_str!("../../web/js/state.js")),
    ("table.js", include_str!("../../web/js/table.js")),
    ("time.js", include_str!("../../web/js/time.js")),
    ("verify.js", include_str!("../../web/js/verify.js")),
];

/// `/`, `/app.css` and `/js/*.js`; needs no state, so it merges into any router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new()
        .route("/", get(index))
        .route("/app.css", get(css));
    for &(name, body) in MODULES {
        r = r.route(
            &format!("/js/{name}"),
            get(move || async move { static_file("text/javascript; charset=utf-8", body) }),
        );
    }
    r
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

#[cfg(test)]
mod tests {
    use super::MODULES;

    /// A module added to web/js/ but not to the table would 404 in the browser and break the page.
    #[test]
    fn every_module_in_web_js_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/js");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("read web/js")
            .map(|e| {
                e.expect("web/js entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".js"))
            .collect();
        on_disk.sort();
        let served: Vec<String> = MODULES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(
            served, on_disk,
            "MODULES in src/api/web.rs must list web/js/*.js, sorted"
        );
    }
}
