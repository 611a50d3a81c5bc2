//! The web dashboard and GraphiQL: built from `gateway/dashboard` into
//! `gateway/dashboard/dist` (committed, so building Troupe needs no Node) and embedded in the
//! binary. Nothing comes from another origin: the Content-Security-Policy says so to the
//! browser. Hashed assets are cached for a year; the pages themselves are revalidated (ETag).

use axum::extract::Path;
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    REFERRER_POLICY, VARY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "dashboard/dist/"]
struct Assets;

/// Every view of the dashboard has its own path; each serves the app, so a deep link or a
/// reload shows that view.
pub const VIEWS: &[&str] = &[
    "/",
    "/tree",
    "/agents",
    "/agents/{id}",
    "/tasks",
    "/tasks/{id}",
    "/swarms",
    "/swarms/{id}",
    "/hosts",
    "/vms",
    "/vms/{id}",
    "/events",
    "/approvals",
    "/alerts",
    "/experiments",
    "/experiments/{id}",
];

/// Scripts, styles, images and connections (HTTP and WebSocket) from this origin only; no
/// inline script, no frames.
const APP_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// GraphiQL's editor sets styles inline, so its page allows inline styles (never scripts).
const GRAPHIQL_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Files under `assets/` carry their content's hash in their name: they never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// GraphiQL's files are named by their pinned version; a day, then revalidated.
const VERSIONED: &str = "public, max-age=86400";
/// Pages: always asked again (answered 304 while unchanged).
const REVALIDATE: &str = "no-cache";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new();
    for view in VIEWS {
        router = router.route(view, get(app));
    }
    router
        .route("/assets/{*file}", get(asset))
        // Browsers ask for /favicon.ico whatever the page says: the same icon.
        .route("/favicon.ico", get(favicon))
        .route("/favicon.svg", get(favicon))
        .route("/graphiql", get(graphiql))
        .route("/graphiql/{*file}", get(graphiql_file))
        .fallback(not_found)
}

/// A path nothing serves: a page that says so and leads back, for a browser (a blank page
/// had no way out); a coded error otherwise.
async fn not_found(uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let wants_html = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if !wants_html {
        let body =
            serde_json::json!({ "error": { "code": "NOT_FOUND", "message": format!("nothing is served at {path}") } });
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    }
    let escaped: String = path
        .chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            c => c.to_string(),
        })
        .collect();
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not found · Troupe</title></head>\
         <body><h1>Nothing here</h1><p>Troupe serves nothing at <code>{escaped}</code>.</p>\
         <p><a href=\"/\">The dashboard</a> · <a href=\"/graphiql\">GraphiQL</a></p></body></html>"
    );
    let mut response = (StatusCode::NOT_FOUND, page).into_response();
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

async fn app(headers: HeaderMap) -> Response {
    serve("index.html", &headers, REVALIDATE, Some(APP_CSP))
}

async fn favicon(headers: HeaderMap) -> Response {
    serve("favicon.svg", &headers, REVALIDATE, None)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&format!("assets/{file}"), &headers, IMMUTABLE, None)
}

async fn graphiql(headers: HeaderMap) -> Response {
    serve("graphiql/index.html", &headers, REVALIDATE, Some(GRAPHIQL_CSP))
}

async fn graphiql_file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&format!("graphiql/{file}"), &headers, VERSIONED, None)
}

/// Answers an embedded file: 304 when the client has it, its gzip form when the client takes
/// gzip and the build made one, 404 when there is no such file.
fn serve(path: &str, headers: &HeaderMap, cache: &'static str, csp: Option<&'static str>) -> Response {
    let Some(file) = (!path.ends_with(".gz")).then(|| Assets::get(path)).flatten() else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let tag = etag(&file.metadata.sha256_hash());
    let mut response = if headers
        .get(IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == tag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match accepts_gzip(headers)
            .then(|| Assets::get(&format!("{path}.gz")))
            .flatten()
        {
            Some(gz) => {
                let mut r = gz.data.into_owned().into_response();
                r.headers_mut()
                    .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            None => file.data.into_owned().into_response(),
        }
    };
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(ETAG, v);
    }
    if let Some(csp) = csp {
        h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
        h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// A weak tag: the gzip and the plain forms of a file share it.
fn etag(hash: &[u8; 32]) -> String {
    let hex: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("W/\"{hex}\"")
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            parts.next() == Some("gzip") && parts.all(|p| p.replace(' ', "") != "q=0")
        })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(encoding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_str(encoding).unwrap());
        h
    }

    #[test]
    fn gzip_is_sent_only_to_who_takes_it() {
        assert!(accepts_gzip(&with("gzip, deflate, br")));
        assert!(accepts_gzip(&with("br;q=1.0, gzip;q=0.5")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(!accepts_gzip(&with("br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    async fn get(path: &str, headers: &[(&str, &str)]) -> Response {
        use tower::ServiceExt;
        let mut request = axum::http::Request::get(path);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        routes::<()>()
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_deep_link_serves_the_app_under_its_policy_and_assets_are_cached_for_good() {
        for view in ["/", "/agents/a1@n", "/tasks?state=DEAD", "/vms/v1", "/events"] {
            let r = get(view, &[]).await;
            assert_eq!(r.status(), StatusCode::OK, "{view}");
            assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
            assert_eq!(r.headers()[CACHE_CONTROL], REVALIDATE);
            assert!(r.headers()[CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self';"));
        }
        let script = Assets::iter()
            .find(|f| f.starts_with("assets/") && f.ends_with(".js"))
            .expect("a built script");
        let plain = get(&format!("/{script}"), &[]).await;
        assert_eq!(plain.headers()[CACHE_CONTROL], IMMUTABLE);
        assert!(plain.headers().get(CONTENT_ENCODING).is_none());
        let gz = get(&format!("/{script}"), &[("accept-encoding", "gzip, br")]).await;
        assert_eq!(gz.headers()[CONTENT_ENCODING], "gzip");
        let tag = gz.headers()[ETAG].to_str().unwrap().to_owned();
        let again = get(&format!("/{script}"), &[("if-none-match", &tag)]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(get("/assets/missing.js", &[]).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(get(&format!("/{script}.gz"), &[]).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/nothing-here", &[]).await.status(), StatusCode::NOT_FOUND);
        // A browser sent to a path nothing serves gets a page that leads back.
        let lost = get("/nope", &[("accept", "text/html,application/xhtml+xml")]).await;
        assert_eq!(lost.status(), StatusCode::NOT_FOUND);
        let page = axum::body::to_bytes(lost.into_body(), 1 << 16).await.unwrap();
        let page = String::from_utf8_lossy(&page);
        assert!(
            page.contains("<a href=\"/\">The dashboard</a>") && page.contains("<code>/nope</code>"),
            "{page}"
        );
        let graphiql = get("/graphiql", &[]).await;
        assert!(graphiql.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'"));
    }

    #[test]
    fn every_view_serves_the_app_and_the_app_is_embedded() {
        let index = Assets::get("index.html").expect("dashboard/dist/index.html is embedded");
        let html = String::from_utf8_lossy(&index.data);
        assert!(html.contains("/assets/"), "the built index names its hashed assets");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing from another origin"
        );
        assert!(Assets::get("graphiql/index.html").is_some());
    }
}
