//! MCP over stdio (`tai-autonomics mcp-stdio`): a relay between the process's stdin/stdout and
//! the `rmcp` transport, so that a line that is not JSON gets the JSON-RPC parse error
//! (`-32700`, `"id": null`) instead of vanishing. rmcp answers every other bad message itself
//! (`-32600` for JSON that is not a JSON-RPC message) but drops a line it cannot parse without
//! a word, and the client then waits for an answer that never comes.
//!
//! Lines go through whole: rmcp's answers and the relay's parse errors are written to stdout
//! by one task, so they never interleave. An error answer without an `id` gets `"id": null`.
//!
//! A line that is a JSON-RPC batch (MCP 2025-03-26, in a session that negotiated it) is taken
//! apart here, since rmcp reads one message per line: its members go to rmcp as lines of their
//! own, and their answers, which come back in any order, are held until the last is in and then
//! written as one array in the members' order (`super::batch::Pending`). A member the client
//! cancels is answered in its place by the relay, since rmcp then answers nothing.

use std::sync::{Arc, Mutex};

use serde::de::IgnoredAny;
use serde_json::{json, Value};
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

/// What the two directions of the relay share for batches: the protocol revision the session
/// negotiated (read from `initialize`'s answer), the batches still running, and whether rmcp's
/// output has ended (then no batch can finish).
#[derive(Default)]
struct Session {
    version: Option<String>,
    pending: super::batch::Pending,
    ended: bool,
}

/// Messages as the lines that carry them.
fn to_lines(values: Vec<Value>) -> Vec<Vec<u8>> {
    values
        .into_iter()
        .map(|v| v.to_string().into_bytes())
        .collect()
}

/// For a batch line: the line answering it now (`None`: nothing yet, or ever) and the member
/// lines to send to rmcp now.
fn take_batch(line: &[u8], session: &Mutex<Session>) -> (Option<Vec<u8>>, Vec<Vec<u8>>) {
    let members: Vec<Value> = match serde_json::from_slice(line) {
        Ok(m) => m,
        Err(e) => return (Some(parse_error(&e).into_bytes()), Vec::new()),
    };
    let mut session = session.lock().unwrap_or_else(|p| p.into_inner());
    let refused = match &session.version {
        None => Some(
            "a batch comes after initialize, in a session of MCP 2025-03-26 (the one revision \
             with batches)"
                .to_owned(),
        ),
        Some(v) => super::batch::refusal(Some(v), &members),
    };
    if let Some(why) = refused {
        let error =
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": why}});
        return (Some(error.to_string().into_bytes()), Vec::new());
    }
    let step = session.pending.add(members);
    (
        step.answer.map(|a| a.to_string().into_bytes()),
        to_lines(step.send),
    )
}

/// For a line that is one message: it goes to rmcp, and when it cancels a request a batch
/// awaits (`notifications/cancelled`, after which rmcp answers nothing for it), the batch goes
/// on without it: the line answering the batch if that was its last, and its next members.
fn take_line(line: &[u8], session: &Mutex<Session>) -> (Option<Vec<u8>>, Vec<Vec<u8>>) {
    let mut send = vec![line.to_vec()];
    let mut session = session.lock().unwrap_or_else(|p| p.into_inner());
    if session.pending.is_empty() || !line.windows(23).any(|w| w == b"notifications/cancelled") {
        return (None, send);
    }
    let Ok(message) = serde_json::from_slice::<Value>(line) else {
        return (None, send);
    };
    if message["method"] != "notifications/cancelled" {
        return (None, send);
    }
    let Some(step) = session.pending.cancel(&message["params"]["requestId"]) else {
        return (None, send);
    };
    send.extend(to_lines(step.send));
    (step.answer.map(|a| a.to_string().into_bytes()), send)
}

/// For a line rmcp answered: what to write (the line itself, or a batch's whole answer once
/// its last member's is in; `None` while the batch runs on) and the batch's member lines to
/// send to rmcp next. Learns the negotiated revision from `initialize`'s answer.
fn give_answer(line: Vec<u8>, session: &Mutex<Session>) -> (Option<Vec<u8>>, Vec<Vec<u8>>) {
    let mut session = session.lock().unwrap_or_else(|p| p.into_inner());
    if session.version.is_some() && session.pending.is_empty() {
        return (Some(with_null_id(line)), Vec::new());
    }
    let Ok(answer) = serde_json::from_slice::<Value>(&line) else {
        return (Some(line), Vec::new());
    };
    let result = &answer["result"];
    if let (Some(v), true) = (
        result["protocolVersion"].as_str(),
        result["serverInfo"].is_object(),
    ) {
        session.version = Some(v.to_owned());
    }
    match session.pending.answer(answer) {
        Err(_) => (Some(with_null_id(line)), Vec::new()),
        Ok(step) => (
            step.answer.map(|a| a.to_string().into_bytes()),
            to_lines(step.send),
        ),
    }
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
    // Lines for rmcp: from stdin (bounded, so a fast client waits for rmcp), and the members
    // of running batches that may go once an answer came in (unbounded, so the answer side
    // never waits on rmcp's input while rmcp waits on its output; a batch holds at most 100).
    // rmcp's input ends when stdin's task drops `feed`, which it does only once no batch runs.
    let (feed, mut fed) = mpsc::channel::<Vec<u8>>(64);
    let (more, mut more_fed) = mpsc::unbounded_channel::<Vec<u8>>();
    let session = Arc::new(Mutex::new(Session::default()));
    let batch_done = Arc::new(tokio::sync::Notify::new());

    tokio::spawn(async move {
        loop {
            let line = tokio::select! {
                biased;
                Some(line) = more_fed.recv() => line,
                line = fed.recv() => match line {
                    Some(line) => line,
                    None => break,
                },
            };
            let sent =
                to_rmcp.write_all(&line).await.is_ok() && to_rmcp.write_all(b"\n").await.is_ok();
            if !sent {
                return;
            }
        }
        while let Ok(line) = more_fed.try_recv() {
            let sent =
                to_rmcp.write_all(&line).await.is_ok() && to_rmcp.write_all(b"\n").await.is_ok();
            if !sent {
                return;
            }
        }
        // Dropping the pipe is rmcp's end of input.
    });

    let errors = lines.clone();
    let (reader_session, reader_done) = (session.clone(), batch_done.clone());
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
            let (answer, run) = match serde_json::from_slice::<IgnoredAny>(text) {
                Ok(_) if super::batch::is_array(text) => take_batch(text, &reader_session),
                Ok(_) => take_line(text, &reader_session),
                Err(e) => (Some(parse_error(&e).into_bytes()), Vec::new()),
            };
            if let Some(answer) = answer {
                if errors.send(answer).await.is_err() {
                    break;
                }
            }
            for member in run {
                if feed.send(member).await.is_err() {
                    return;
                }
            }
        }
        // Batches still running send their remaining members through `feed`.
        loop {
            let waiting = reader_done.notified();
            {
                let s = reader_session.lock().unwrap_or_else(|p| p.into_inner());
                if s.pending.is_empty() || s.ended {
                    break;
                }
            }
            waiting.await;
        }
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
            let (write, run) = give_answer(line, &session);
            for member in run {
                if more.send(member).is_err() {
                    break;
                }
            }
            if let Some(write) = write {
                batch_done.notify_one();
                if lines.send(write).await.is_err() {
                    break;
                }
            }
        }
        session.lock().unwrap_or_else(|p| p.into_inner()).ended = true;
        batch_done.notify_one();
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
