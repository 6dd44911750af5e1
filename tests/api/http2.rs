//! HTTP/2 without TLS (h2c with prior knowledge, as Cloud Run's `--use-http2` speaks to an
//! instance), driven by the `h2` crate as an independent client: governed signals multiplexed
//! on one connection, MCP in both protocol eras with its DNS-rebinding check on `:authority`,
//! the JSON error bodies, a body over the limit answered 413 while it is still arriving, or
//! 408 when it stops arriving, and answers that waited on an actor sent without Nagle's delay.

use std::time::Duration;

use actix_web::web::Bytes;

use crate::helpers::*;

/// One HTTP/2 connection to the app, with prior knowledge (no upgrade, no TLS).
#[derive(Clone)]
struct H2 {
    host: String,
    send: h2::client::SendRequest<Bytes>,
}

impl H2 {
    async fn connect(app: &TestApp) -> H2 {
        let host = app.address.trim_start_matches("http://").to_owned();
        let tcp = tokio::net::TcpStream::connect(&host)
            .await
            .expect("connects");
        let (send, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        actix_web::rt::spawn(async move {
            let _ = connection.await;
        });
        H2 { host, send }
    }

    /// `method path` with `body` sent in pieces of `piece` bytes, a millisecond apart (the
    /// upload stops quietly if the server ends the stream first); the answer's status and
    /// body, or the stream's error.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        piece: usize,
    ) -> Result<(u16, Vec<u8>), h2::Error> {
        self.request_with(method, path, &[], body, piece)
            .await
            .map(|(status, _, body)| (status, body))
    }

    /// [`H2::request`] with more headers; the answer's headers too.
    async fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        piece: usize,
    ) -> Result<(u16, http::HeaderMap, Vec<u8>), h2::Error> {
        let mut send = self.send.clone().ready().await?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.host))
            .header("content-type", "application/json")
            .header("content-length", body.len().to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(()).unwrap();
        let (response, mut stream) = send.send_request(request, body.is_empty())?;
        if !body.is_empty() {
            let body = body.to_vec();
            actix_web::rt::spawn(async move {
                for chunk in body.chunks(piece) {
                    stream.reserve_capacity(chunk.len());
                    if stream
                        .send_data(Bytes::copy_from_slice(chunk), false)
                        .is_err()
                    {
                        return;
                    }
                    actix_web::rt::time::sleep(Duration::from_millis(1)).await;
                }
                let _ = stream.send_data(Bytes::new(), true);
            });
        }
        read(response.await?).await
    }

    /// `POST path` announcing 1,000 bytes of body, of which only `part` is ever sent; the
    /// stream is held open until the answer comes.
    async fn stalled(&self, path: &str, part: &str) -> (u16, serde_json::Value) {
        let mut send = self.send.clone().ready().await.expect("ready");
        let request = http::Request::post(format!("http://{}{path}", self.host))
            .header("content-type", "application/json")
            .header("content-length", "1000")
            .body(())
            .unwrap();
        let (response, mut stream) = send.send_request(request, false).expect("sent");
        stream
            .send_data(Bytes::copy_from_slice(part.as_bytes()), false)
            .expect("part sent");
        let response = response.await.expect("an answer, not a reset");
        let (status, _, out) = read(response).await.expect("the whole answer");
        drop(stream);
        (status, serde_json::from_slice(&out).expect("JSON"))
    }

    async fn json(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, bytes) = self
            .request(method, path, body.as_bytes(), 16_384)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: no answer over HTTP/2: {e:?}"));
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {bytes:?}"));
        (status, json)
    }
}

/// An answer's status, headers and whole body.
async fn read(
    response: http::Response<h2::RecvStream>,
) -> Result<(u16, http::HeaderMap, Vec<u8>), h2::Error> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok((status, headers, out))
}

#[actix_web::test]
async fn signals_multiplexed_on_one_http2_connection_are_each_decided_once() {
    let app = spawn_app(|_| {}).await;
    let h2 = H2::connect(&app).await;
    let (status, _) = h2
        .json(
            "POST",
            "/marketplace",
            r#"{"tenant_id":"multi","entitlement_id":"e","action":"grant"}"#,
        )
        .await;
    assert_eq!(status, 200);
    // Fifty streams at once on the one connection.
    let calls = (0..50).map(|i| {
        let h2 = h2.clone();
        async move {
            let body = format!(r#"{{"metric":"cpu","value":{}}}"#, i % 50);
            h2.json("POST", "/v1/tenants/multi/signals", &body).await
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let mut seqs: Vec<u64> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body["decision"], "accept", "{body}");
            body["receipt"]["seq"].as_u64().expect("seq")
        })
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 50, "each signal has its own receipt");
    let (status, verify) = h2
        .json("GET", "/v1/tenants/multi/receipts/verify", "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(verify["valid"], true, "{verify}");
    // Grant, the governor's entitlement check, then one receipt per signal.
    assert_eq!(verify["receipts_checked"], 52, "{verify}");
}

#[actix_web::test]
async fn errors_over_http2_have_the_json_body_even_when_answered_before_the_upload_ends() {
    let app = spawn_app(|_| {}).await;
    let h2 = H2::connect(&app).await;
    let (status, body) = h2
        .json(
            "POST",
            "/v1/tenants/nobody/signals",
            r#"{"metric":"cpu","value":1"#,
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_json")));
    let (status, body) = h2
        .json(
            "POST",
            "/v1/tenants/nobody/signals",
            r#"{"metric":"cpu","value":1}"#,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("tenant_not_found"))
    );
    // The server answers once the limit (64 KiB) is passed, while the client is still
    // sending: the answer must reach it, not a reset stream.
    let big = vec![b'a'; 512 * 1024];
    for round in 0..10 {
        let (status, body) = h2
            .request("POST", "/v1/tenants/nobody/signals", &big, 8_192)
            .await
            .unwrap_or_else(|e| panic!("round {round}: no answer, {e:?}"));
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            (status, body["code"].as_str()),
            (413, Some("payload_too_large")),
            "round {round}"
        );
    }
    // The connection is still good after the early answers.
    let (status, _) = h2.json("GET", "/health/live", "").await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_body_that_stops_arriving_over_http2_gets_408_and_nothing_is_stored() {
    let app = spawn_app(|s| s.http.body_timeout_ms = 300).await;
    let h2 = H2::connect(&app).await;
    let grant = r#"{"tenant_id":"slow","entitlement_id":"e","action":"grant"}"#;
    assert_eq!(h2.json("POST", "/marketplace", grant).await.0, 200);
    for (path, part) in [
        ("/v1/tenants/slow/signals", r#"{"metric":"cpu","value":1}"#),
        ("/pubsub", r#"{"message":"#),
    ] {
        let started = std::time::Instant::now();
        let (status, body) =
            actix_web::rt::time::timeout(Duration::from_secs(10), h2.stalled(path, part))
                .await
                .unwrap_or_else(|_| panic!("{path}: no answer within 10 s"));
        assert_eq!(
            (status, body["code"].as_str()),
            (408, Some("request_timeout")),
            "{path}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    }
    let (_, page) = h2.json("GET", "/v1/tenants/slow/receipts", "").await;
    assert_eq!(page["head_seq"], 1, "only the grant is stored");
}

#[actix_web::test]
async fn mcp_over_http2_in_both_protocol_eras() {
    let app = spawn_app(|_| {}).await;
    let h2 = H2::connect(&app).await;
    let grant = r#"{"tenant_id":"agent","entitlement_id":"e","action":"grant"}"#;
    assert_eq!(h2.json("POST", "/marketplace", grant).await.0, 200);
    let mcp = |h2: &H2, headers: Vec<(&'static str, &'static str)>, body: serde_json::Value| {
        let h2 = h2.clone();
        async move {
            let mut all = vec![("accept", "application/json, text/event-stream")];
            all.extend(headers);
            let (status, headers, bytes) = h2
                .request_with("POST", "/mcp", &all, body.to_string().as_bytes(), 16_384)
                .await
                .expect("an answer");
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            (status, headers, json)
        }
    };
    // The stateless revision: one request, the decision in the answer.
    let meta = serde_json::json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}, "io.modelcontextprotocol/clientInfo": {"name": "h2", "version": "1"}});
    let (status, _, call) = mcp(
        &h2,
        vec![("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "taiea.governor.signal")],
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "taiea.governor.signal", "arguments": {"tenant_id": "agent", "metric": "cpu", "value": 10}, "_meta": meta}}),
    )
    .await;
    assert_eq!(status, 200, "{call}");
    assert_eq!(
        call["result"]["structuredContent"]["state"], "stable",
        "{call}"
    );
    // The handshake era's `initialize`.
    let initialize = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "h2", "version": "1"}}});
    let (status, _, init) = mcp(&h2, vec![], initialize.clone()).await;
    assert_eq!(status, 200, "{init}");
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    assert_eq!(
        init["result"]["serverInfo"]["name"], "tai-autonomics",
        "{init}"
    );
    // HTTP/2 names the host in `:authority`, not in a Host header: the DNS-rebinding check
    // reads it there, and a name off the allow-list is refused as over HTTP/1.1.
    let port = h2.host.rsplit(':').next().unwrap().to_owned();
    let rebound = H2 {
        host: format!("attacker.example:{port}"),
        send: h2.send.clone(),
    };
    let (status, _, _) = mcp(&rebound, vec![], initialize).await;
    assert_eq!(status, 403);
}

#[actix_web::test]
async fn answers_that_wait_for_a_governor_leave_at_once_over_http2() {
    // An answer written after the request has waited on an actor goes out as HTTP/2 frames in
    // more than one write. With Nagle's algorithm on the accepted socket, the later ones wait
    // for the client's delayed acknowledgement: about 40 ms on Linux for every such answer,
    // where an answer takes well under a millisecond here. The median of eleven in a row tells
    // the two apart with a wide margin either way.
    let app = spawn_app(|_| {}).await;
    let h2 = H2::connect(&app).await;
    let grant = r#"{"tenant_id":"quick","entitlement_id":"e","action":"grant"}"#;
    assert_eq!(h2.json("POST", "/marketplace", grant).await.0, 200);
    let mut took = Vec::new();
    for _ in 0..11 {
        let started = std::time::Instant::now();
        let (status, body) = h2.json("GET", "/v1/tenants/quick/entitlement", "").await;
        took.push(started.elapsed());
        assert_eq!(status, 200, "{body}");
    }
    took.sort();
    assert!(
        took[5] < Duration::from_millis(25),
        "median {:?} of {took:?}",
        took[5]
    );
}
