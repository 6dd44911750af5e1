//! Client mistakes get a precise 4xx with the JSON error body, never a 5xx.

use actix_web::middleware::ErrorHandlers;
use actix_web::{test, web, App, HttpResponse};
use tai_autonomics::http;

use crate::helpers::*;

#[actix_web::test]
async fn unknown_routes_are_404_and_wrong_methods_405_with_the_json_body() {
    let app = spawn_app(|_| {}).await;
    let (status, body) = app.get_json("/no/such/route").await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        serde_json::json!({"type": "refusal", "code": "not_found", "message": "no such route"})
    );
    let mut res = app.client.delete(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers().get("allow").unwrap(), "GET");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        (body["type"].as_str(), body["code"].as_str()),
        (Some("refusal"), Some("method_not_allowed"))
    );
}

#[actix_web::test]
async fn hostile_paths_and_query_strings_never_produce_5xx() {
    let app = spawn_app(|_| {}).await;
    for path in [
        "/%00",
        "/v1/supervision?limit=-1",
        "/v1/supervision?limit=abc",
        "/..%2f..%2fetc/passwd",
        "/v1/chaos/actors/%F0%9F%92%A5/crash",
        "/health/%ff",
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert!(
            res.status().is_client_error() || res.status().is_success(),
            "{path}: {}",
            res.status()
        );
        if res.status().is_client_error() {
            assert_eq!(
                res.headers().get("content-type").unwrap(),
                "application/json",
                "{path}"
            );
        }
    }
}

/// A JSON route wired exactly like the service's (same extractor config, same error handlers),
/// so the body-error mapping is tested before the service has JSON POST routes of its own.
async fn echo_service(
    limit: usize,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    #[derive(serde::Deserialize)]
    struct Sample {
        #[allow(dead_code)]
        value: f64,
    }
    test::init_service(
        App::new()
            .configure(|cfg| http::extractor_config(cfg, limit))
            .route(
                "/echo",
                web::post().to(|_: web::Json<Sample>| async {
                    HttpResponse::Ok().json(serde_json::json!({"ok": true}))
                }),
            )
            .wrap(ErrorHandlers::new().default_handler(http::error::json_error_body)),
    )
    .await
}

#[actix_web::test]
async fn body_errors_map_to_400_413_and_415_with_stable_codes() {
    let svc = echo_service(1024).await;
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "malformed",
            b"{\"value\": ".to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            "not json",
            b"hello".to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            "wrong type",
            b"{\"value\": \"NaN\"}".to_vec(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            "missing field",
            b"{}".to_vec(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            "huge number as string",
            b"{\"value\": \"1e999\"}".to_vec(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            "too large",
            vec![b' '; 4096],
            "application/json",
            413,
            "payload_too_large",
        ),
        (
            "wrong content type",
            b"{\"value\": 1}".to_vec(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
    ];
    for (name, body, ctype, status, code) in cases {
        let req = test::TestRequest::post()
            .uri("/echo")
            .insert_header(("content-type", ctype))
            .set_payload(body)
            .to_request();
        let res = test::call_service(&svc, req).await;
        assert_eq!(res.status().as_u16(), status, "{name}");
        let json: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(
            (json["type"].as_str(), json["code"].as_str()),
            (Some("refusal"), Some(code)),
            "{name}: {json}"
        );
    }
    let ok = test::TestRequest::post()
        .uri("/echo")
        .set_json(serde_json::json!({"value": 1.5}))
        .to_request();
    assert_eq!(test::call_service(&svc, ok).await.status(), 200);
}
