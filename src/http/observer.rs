//! `GET /observer`: the Erlang observer's job for this service, as one static HTML page.
//!
//! The page holds no data of its own: its script reads `/health`, `/metrics`,
//! `/v1/supervision` and `/v1/supervision/events` every two seconds with the caller's token (so
//! bearer mode still decides who sees the tree), and draws the supervision tree, governors by
//! state and restart counters. The policy below lets it run only its own inline script and talk
//! only to this origin.

use actix_web::HttpResponse;

const PAGE: &str = include_str!("observer.html");

/// `GET /observer`
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("cache-control", "no-cache"))
        .body(PAGE)
}
