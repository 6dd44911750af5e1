//! MCP over stdio (`tai-autonomics mcp-stdio`): a relay between the process's stdin/stdout and
//! the `rmcp` transport, so that a line that is not JSON gets the JSON-RPC parse error
//! (`-32700`, `"id": null`) instead of vanishing. rmcp answers every other bad message itself
//! (`-32600` for JSON that is not a JSON-RPC message) but drops a line it cannot parse without
//! a word, and the client then waits for an answer that never comes.
//!
//! Lines go through whole: rmcp's answers and the relay's parse errors are written to stdout
//! by one task, so they never interleave. An error answer without an `id` gets `"id": null`.

use serde::de::IgnoredAny;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;

/// How much of an answer or a request may wait in the relay's pipes.
const PIPE_BYTES: usize = 1 << 16;

/// The transport for rmcp, and the relay's tasks (which end once stdin and rmcp's output have
/// both ended and everything was written).
pub struct Relay {
    pub transport: (DuplexStream, DuplexStream),
    pub done: tokio::task::JoinHandle<()>,
}

/// The JSON-RPC answer to a line that is not JSON.
pub fn parse_error(e: &serde_json::Error) -> String {
    json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("Parse error: {e}")}})
        .to_string()
}

/// An error response must carry `"id"` (JSON-RPC 2.0 §5), `null` when the request's could not
/// be read; rmcp leaves it out of its `-32600` answers to messages without one.
pub fn with_null_id(line: Vec<u8>) -> Vec<u8> {
    if line.windows(5).any(|w| w == b"\"id\":") {
        return line;
    }
    match serde_json::from_slice::<serde_json::Value>(&line) {
        Ok(serde_json::Value::Object(mut m)) if m.contains_key("error") => {
            m.insert("id".into(), serde_json::Value::Null);
            serde_json::Value::Object(m).to_string().into_bytes()
        }
        _ => line,
    }
}

/// Starts relaying `input` to rmcp and rmcp's answers (with the relay's own) to `output`.
pub fn relay<I, O>(input: I, mut output: O) -> Relay
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
{
    let (rmcp_in, mut to_rmcp) = tokio::io::duplex(PIPE_BYTES);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(PIPE_BYTES);
    let (lines, mut out) = mpsc::channel::<Vec<u8>>(64);

    let errors = lines.clone();
    tokio::spawn(async move {
        let mut input = BufReader::new(input);
        let mut line = Vec::new();
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice::<IgnoredAny>(text) {
                Ok(_) => {
                    let sent = to_rmcp.write_all(text).await.is_ok()
                        && to_rmcp.write_all(b"\n").await.is_ok();
                    if !sent {
                        break;
                    }
                }
                Err(e) => {
                    if errors.send(parse_error(&e).into_bytes()).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping the pipe is rmcp's end of input.
    });

    tokio::spawn(async move {
        let mut answers = BufReader::new(from_rmcp);
        loop {
            let mut line = Vec::new();
            match answers.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.ends_with(b"\n") {
                line.pop();
            }
            if lines.send(with_null_id(line)).await.is_err() {
                break;
            }
        }
    });

    let done = tokio::spawn(async move {
        while let Some(mut line) = out.recv().await {
            line.push(b'\n');
            if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });
    Relay {
        transport: (rmcp_in, rmcp_out),
        done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn lines_that_are_not_json_are_answered_and_the_rest_pass_through_whole() {
        let (mut client, server_input) = tokio::io::duplex(1024);
        let (server_output, client_output) = tokio::io::duplex(1024);
        let r = relay(server_input, server_output);
        let (mut rmcp_in, mut rmcp_out) = r.transport;
        client
            .write_all(b"{\"a\":1}\n\nnot json\n  {\"b\":2}  \n")
            .await
            .unwrap();
        drop(client);
        // What rmcp reads: the JSON lines only, trimmed, and then the end of input.
        let mut seen = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut rmcp_in, &mut seen)
            .await
            .unwrap();
        assert_eq!(seen, "{\"a\":1}\n{\"b\":2}\n");
        rmcp_out.write_all(b"{\"answer\":1}\n").await.unwrap();
        drop(rmcp_out);
        drop(rmcp_in);
        r.done.await.unwrap();
        let mut written = String::new();
        let mut client_output = client_output;
        tokio::io::AsyncReadExt::read_to_string(&mut client_output, &mut written)
            .await
            .unwrap();
        let lines: Vec<serde_json::Value> = written
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{written}");
        let error = lines.iter().find(|l| l["error"].is_object()).unwrap();
        assert_eq!(
            (&error["error"]["code"], &error["id"]),
            (&json!(-32700), &json!(null))
        );
        assert!(lines.contains(&json!({"answer": 1})));
    }

    #[test]
    fn an_error_answer_without_an_id_gets_a_null_one() {
        let fixed = with_null_id(
            br#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid request"}}"#.to_vec(),
        );
        let v: serde_json::Value = serde_json::from_slice(&fixed).unwrap();
        assert_eq!(
            (&v["id"], &v["error"]["code"]),
            (&json!(null), &json!(-32600))
        );
        let answer = br#"{"jsonrpc":"2.0","id":3,"result":{}}"#.to_vec();
        assert_eq!(with_null_id(answer.clone()), answer);
        let notification = br#"{"jsonrpc":"2.0","method":"notifications/x"}"#.to_vec();
        assert_eq!(with_null_id(notification.clone()), notification);
    }
}
