//! Client mistakes get a precise 4xx with the JSON error body, never a 5xx; also hundreds of
//! seeded random hostile requests (`TAI_FUZZ_SEED` draws a run again).

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
        serde_json::json!({"type": "refusal", "code": "not_found",
            "message": "no such route: GET /no/such/route (every route is described at /openapi.json)"})
    );
    // A path of any length is named cut short.
    let long = format!("/{}", "x".repeat(5000));
    let (status, body) = app.get_json(&long).await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().len() < 300, "{body}");
    let mut res = app.client.delete(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers().get("allow").unwrap(), "GET, HEAD");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        (body["type"].as_str(), body["code"].as_str()),
        (Some("refusal"), Some("method_not_allowed"))
    );
    assert_eq!(
        body["message"],
        "method DELETE is not allowed here; this route takes GET, HEAD"
    );
    // MCP's one route takes every method and lets the transport refuse; it says POST too.
    for method in ["GET", "DELETE", "PUT", "TRACE"] {
        let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut res = app
            .client
            .request(method.clone(), app.url("/mcp"))
            .insert_header(("accept", "application/json, text/event-stream"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method}");
        assert_eq!(res.headers().get("allow").unwrap(), "POST", "{method}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["code"], "method_not_allowed", "{method}");
    }
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

/// Sends `head` and part of a body over a raw connection and reads what comes back.
fn stalled_request(address: &str, head: &str, part: &str) -> (String, std::time::Duration) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(format!("{head}\r\n\r\n{part}").as_bytes())
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0; 4096];
    let n = s.read(&mut answer).unwrap_or(0);
    (
        String::from_utf8_lossy(&answer[..n]).into_owned(),
        started.elapsed(),
    )
}

#[actix_web::test]
async fn a_body_that_stops_arriving_gets_408_and_nothing_is_stored() {
    let app = spawn_app(|s| s.http.body_timeout_ms = 300).await;
    let (status, _) = app
        .post_json(
            "/marketplace",
            &serde_json::json!({"tenant_id": "slow", "entitlement_id": "e", "action": "grant"}),
        )
        .await;
    assert_eq!(status, 200);
    // A JSON route, and routes that read their body as bytes (Pub/Sub push, MCP).
    for (path, part) in [
        ("/v1/tenants/slow/signals", r#"{"metric":"cpu","value":1}"#),
        ("/pubsub", r#"{"message":"#),
        ("/mcp", r#"{"jsonrpc":"#),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 1000"
        );
        let address = app.address.clone();
        let (answer, waited) =
            actix_web::rt::task::spawn_blocking(move || stalled_request(&address, &head, part))
                .await
                .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "{path}: {answer:?} after {waited:?}"
        );
        assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
        assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");
    }
    assert_eq!(
        app.get_json("/v1/tenants/slow/receipts").await.1["head_seq"],
        1,
        "only the grant is stored"
    );
}

#[actix_web::test]
async fn a_compressed_body_is_415_naming_the_encoding_and_nothing_is_stored() {
    let app = spawn_app(|_| {}).await;
    grant(&app, "zip").await;
    for path in ["/v1/tenants/zip/signals", "/pubsub", "/mcp"] {
        let mut res = app
            .client
            .post(app.url(path))
            .insert_header(("content-type", "application/json"))
            .insert_header(("accept", "application/json, text/event-stream"))
            .insert_header(("content-encoding", "gzip"))
            .send_body(vec![0x1f, 0x8b, 0x08, 0x00])
            .await
            .unwrap();
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(res.status(), 415, "{path}: {body}");
        assert_eq!(body["code"], "unsupported_media_type", "{path}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("Content-Encoding \"gzip\""),
            "{body}"
        );
    }
    // `identity` is no encoding at all, and a JSON body's `charset` has no effect (RFC 8259
    // §11): the body is read as UTF-8 whatever the label says.
    let res = app
        .client
        .post(app.url("/v1/tenants/zip/signals"))
        .insert_header(("content-encoding", "identity"))
        .insert_header(("content-type", "application/json; charset=ISO-8859-1"))
        .send_body(r#"{"metric": "cpu", "value": 1.0}"#)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.get_json("/v1/tenants/zip/receipts").await.1["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["event_type"] == "signal_processed")
            .count(),
        1,
        "only the uncompressed signal was decided"
    );
}

/// A small deterministic generator (xorshift64*), so a failing run can be drawn again.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[(self.next() % from.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A body close to what `template`'s route takes (so that some requests are decided and
/// recorded), or else [`hostile_body`].
fn body_for(template: &str, d: &mut Draw) -> Vec<u8> {
    use serde_json::json;
    if !d.chance(40) {
        return hostile_body(d);
    }
    let value = *d.pick(&[10.0, 50.0, 65.0, 85.0, -1.0, 100.5]);
    let body = match template {
        t if t.ends_with("/signals") => json!({"metric": "cpu", "value": value}),
        "/marketplace" => json!({
            "tenant_id": d.pick(&["acme", "acme2", "Bad Id"]),
            "entitlement_id": "e",
            "action": d.pick(&["grant", "suspend", "resume", "revoke", "provision"]),
            "sku": d.pick(&["base", "enterprise", "gold"]),
        }),
        t if t.ends_with("/tool-calls") => json!({
            "tool": d.pick(&["health", "support_model", "policy_evaluate", "nope"]),
            "args": {},
        }),
        t if t.ends_with("/entitlement/events") => json!({
            "event": d.pick(&["pack_enabled", "pack_disabled", "sku_changed", "iam_role_added"]),
            "value": d.pick(&["enterprise", "professional", "admin", "x"]),
        }),
        _ => json!({}),
    };
    serde_json::to_vec(&body).unwrap()
}

/// A body a careless or hostile client might send: JSON objects of known and unknown keys
/// with values of every awkward kind, broken or truncated JSON, bytes that are not UTF-8.
fn hostile_body(d: &mut Draw) -> Vec<u8> {
    use serde_json::json;
    const RAW: &[&[u8]] = &[
        b"",
        b"{",
        b"[]",
        b"null",
        b"\xff\xfe\x00",
        b"{\"metric\":\"cpu\",\"value\":NaN}",
        b"{\"value\": 1e400, \"metric\": \"cpu\"}",
        b"{\"metric\":\"cpu\",\"value\":50}{\"metric\":\"cpu\"}",
    ];
    if d.chance(15) {
        return d.pick(RAW).to_vec();
    }
    let keys = [
        "metric",
        "value",
        "timestamp_ms",
        "tool",
        "args",
        "timeout_ms",
        "event",
        "tenant_id",
        "entitlement_id",
        "action",
        "sku",
        "reason",
        "signature",
        "message",
        "subscription",
        "jsonrpc",
        "method",
        "params",
        "id",
    ];
    let values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1e308),
        json!("NaN"),
        json!("Infinity"),
        json!("1e999"),
        json!(85.0),
        json!("x".repeat(2000)),
        json!([1, [2, [3]]]),
        json!({"a": {"b": {}}}),
        json!("\u{0}é☃"),
        json!(u64::MAX),
        json!("acme"),
        json!("grant"),
        json!("suspend"),
    ];
    let mut body = serde_json::Map::new();
    for _ in 0..(d.next() % 6) {
        body.insert(d.pick(&keys).to_string(), d.pick(&values).clone());
    }
    let mut bytes = serde_json::to_vec(&body).unwrap();
    if d.chance(5) {
        bytes.truncate((d.next() as usize) % (bytes.len() + 1));
    }
    bytes
}

#[actix_web::test]
async fn hundreds_of_random_hostile_requests_get_precise_answers_and_lose_nothing() {
    // Arrange: a granted tenant with a chain, and a seed (TAI_FUZZ_SEED draws a run again).
    let seed = std::env::var("TAI_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| tai_autonomics::clock::now_ms() | 1);
    let mut d = Draw(seed);
    let app = spawn_app(|s| {
        s.rate_limit.per_second = 1_000_000;
        s.rate_limit.burst = 1_000_000;
    })
    .await;
    grant(&app, "acme").await;
    let routes = [
        ("POST", "/v1/tenants/{t}/signals"),
        ("POST", "/v1/tenants/{t}/entitlement/events"),
        ("GET", "/v1/tenants/{t}/entitlement"),
        ("GET", "/v1/governors/{t}"),
        ("GET", "/v1/governors?limit={q}&after={t}"),
        ("POST", "/v1/governors/{t}/tool-calls"),
        ("POST", "/v1/governors/{t}/actions/{id}/complete"),
        ("POST", "/v1/governors/{t}/actions/{id}/fail"),
        ("POST", "/v1/governors/{t}/reset"),
        ("GET", "/v1/tenants/{t}/receipts?after_seq={q}&limit={q}"),
        (
            "GET",
            "/v1/tenants/{t}/receipts/verify?anchor_seq={q}&anchor_hash={id}",
        ),
        ("GET", "/v1/receipts/{id}"),
        ("POST", "/marketplace"),
        ("POST", "/pubsub"),
        ("POST", "/mcp"),
        ("GET", "/v1/supervision?limit={q}"),
    ];
    // The granted tenant half of the time, so that requests reach its governor.
    let long = "a".repeat(64);
    let hostile = [
        "ACME", "ghost", "-x", "%2e%2e", "%00", "%C3%A9", "a%20b", "x.y-z_1", &long,
    ];
    let tenants: Vec<&str> = std::iter::repeat_n("acme", hostile.len())
        .chain(hostile)
        .collect();
    let ids = [
        "x",
        "%00",
        "..",
        "01a22752-aa84-7304-acd5-133fccb0de6a",
        &"a".repeat(300),
    ];
    let numbers = ["", "-1", "0", "7", "99999999999999999999", "x", "1.5"];
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
    let types = [
        "application/json",
        "text/plain",
        "application/json; charset=utf-8",
        "",
    ];

    // Act and assert, request by request.
    for i in 0..600 {
        let (mut method, template) = *d.pick(&routes);
        if d.chance(8) {
            method = *d.pick(&methods);
        }
        let path = template
            .replace("{t}", d.pick::<&str>(&tenants))
            .replace("{id}", d.pick::<&str>(&ids))
            .replacen("{q}", d.pick::<&str>(&numbers), 1)
            .replace("{q}", d.pick::<&str>(&numbers));
        let mut req = app
            .client
            .request(method.parse().unwrap(), app.url(&path))
            .insert_header(("accept", "application/json, text/event-stream"));
        let content_type = if d.chance(10) {
            *d.pick(&types)
        } else {
            "application/json"
        };
        if !content_type.is_empty() {
            req = req.insert_header(("content-type", content_type));
        }
        let body = body_for(template, &mut d);
        let what = format!(
            "seed {seed} (TAI_FUZZ_SEED={seed} repeats it), request {i}: {method} {path} {:?}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        let mut res = req.send_body(body).await.expect("an answer");
        let status = res.status().as_u16();
        let bytes = res.body().limit(1 << 24).await.unwrap();
        assert!(
            status < 500 || status == 503,
            "{what}: {status} {:?}",
            String::from_utf8_lossy(&bytes)
        );
        if status >= 400 && !path.starts_with("/mcp") {
            let error: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{what}: {status} body is not JSON ({e})"));
            assert!(
                error["type"] == "refusal"
                    && error["code"].is_string()
                    && error["message"].is_string(),
                "{what}: {status} {error}"
            );
        }
    }

    // Nothing was lost or forked: the tenants' chains verify.
    for tenant in ["acme", "acme2"] {
        let (s, report) = (app.get_json(&format!("/v1/tenants/{tenant}/receipts/verify"))).await;
        assert!(
            s == 404 || report["valid"] == true,
            "seed {seed}: {tenant}: {report}"
        );
    }
}

/// `curl -d` without a content type sends a form's; the 415 says what came and how to send
/// JSON, on a JSON route and on one whose body is optional, and nothing is stored.
#[actix_web::test]
async fn a_body_of_another_type_is_415_saying_what_came_and_how_to_send_json() {
    let app = spawn_app(|_| {}).await;
    grant(&app, "typed").await;
    let cases: [(Option<&str>, &str); 3] = [
        (
            Some("application/x-www-form-urlencoded"),
            "what curl -d sends unless given -H 'content-type: application/json'",
        ),
        (Some("text/plain"), "not \"text/plain\""),
        (None, "the request has none"),
    ];
    for path in [
        "/v1/tenants/typed/signals",
        "/v1/governors/typed/actions/a-1/complete",
    ] {
        for (ctype, says) in cases {
            let mut req = app.client.post(app.url(path));
            if let Some(ctype) = ctype {
                req = req.insert_header(("content-type", ctype));
            }
            let mut res = req
                .send_body(r#"{"metric":"cpu","value":1}"#)
                .await
                .unwrap();
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(res.status(), 415, "{path} {ctype:?}: {body}");
            assert_eq!(body["code"], "unsupported_media_type");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains(says), "{path} {ctype:?}: {message}");
        }
    }
    assert_eq!(events(&app, "typed").await, ["entitlement_granted"]);
}
