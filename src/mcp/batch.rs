//! JSON-RPC batches, which MCP 2025-03-26 has (and 2025-06-18 removed): the rules both
//! transports apply before a batch's members reach rmcp, which reads one message at a time.
//! Pure: no I/O. Over HTTP (`http/mcp.rs`) each member becomes its own request to rmcp; over
//! stdio (`mcp/stdio.rs`) each becomes a line, and [`Pending`] holds the answers back until
//! the last one is in.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};

/// The most messages one batch may hold; each is decided before the answer goes out.
pub const MAX_BATCH: usize = 100;

/// The protocol revision that has JSON-RPC batches.
pub const REVISION: &str = "2025-03-26";

/// Whether a body or line is a JSON array (a batch), by its first byte that is not whitespace.
pub fn is_array(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .is_some_and(|&b| b == b'[')
}

/// Why a batch is refused as a whole, or `None` when its members are read one by one.
/// `version` is the protocol revision the request or session speaks, `None` when it says none
/// (over HTTP that is 2025-03-26, as 2025-06-18 tells a server that cannot tell otherwise).
pub fn refusal(version: Option<&str>, members: &[Value]) -> Option<String> {
    if let Some(v) = version.filter(|v| *v != REVISION) {
        let shown: String = v.chars().take(32).collect();
        return Some(format!(
            "JSON-RPC batches are part of MCP {REVISION} only (2025-06-18 removed them), \
             and this one speaks {shown}; send one message at a time"
        ));
    }
    if members.is_empty() {
        return Some("an empty batch: a batch holds one message or more".to_owned());
    }
    if members.len() > MAX_BATCH {
        return Some(format!(
            "a batch of {} messages: at most {MAX_BATCH} in one request",
            members.len()
        ));
    }
    None
}

/// The JSON-RPC error answering a member that is not run: `-32600` with the member's id when
/// it has one a request may carry (a string or an integer), else `null`.
pub fn member_error(member: &Value, reason: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": request_id(member).cloned().unwrap_or(Value::Null),
        "error": {"code": -32600, "message": reason},
    })
}

/// An answer rmcp gave to one member, fit for a batch's array: every element of the array is
/// a JSON-RPC response, which has an `id`. rmcp refuses a stray response (a stateless server
/// sent no request it could answer) with an error that has none, as MCP allows for a single
/// message; in a batch it gets `"id": null`, as JSON-RPC wants for an error with no request.
pub fn as_member_answer(mut answer: Value) -> Value {
    if let Some(fields) = answer.as_object_mut() {
        fields.entry("id").or_insert(Value::Null);
    }
    answer
}

/// The id of a message, when it is one a request may carry: a string or an integer.
pub fn request_id(message: &Value) -> Option<&Value> {
    message
        .get("id")
        .filter(|id| id.is_string() || id.is_i64() || id.is_u64())
}

/// What a member needs: to be answered in its place without running (`Err`, the error), or
/// to run (`Ok`, with whether an answer will come for it: requests get one, notifications
/// and responses none). A member rmcp would not read as a client message does not run.
pub fn triage(member: &Value) -> Result<bool, Value> {
    use serde::Deserialize as _;
    let readable = rmcp::model::ClientJsonRpcMessage::deserialize(member).is_ok();
    if !member.is_object() {
        return Err(member_error(
            member,
            "a batch's member is not a JSON-RPC message",
        ));
    }
    if !readable {
        return Err(member_error(
            member,
            "not a JSON-RPC 2.0 message this server reads: `jsonrpc` must be \"2.0\", `id` a \
             string or an integer, `params` an object of the method's shape",
        ));
    }
    if member.get("method").and_then(Value::as_str) == Some("initialize") {
        return Err(member_error(
            member,
            "initialize must not be part of a batch (MCP 2025-03-26): send it alone",
        ));
    }
    Ok(member.get("method").is_some() && request_id(member).is_some())
}

/// Batches whose members run one after another, each answer awaited before the next member
/// is sent (stdio, where rmcp runs whatever it reads at once, and answers come back as lines in
/// any order). Each awaited answer is found by its request's id.
#[derive(Default)]
pub struct Pending {
    next: u64,
    batches: HashMap<u64, Batch>,
    /// A request id's JSON text → (batch, slot).
    waiting: HashMap<String, (u64, usize)>,
}

struct Batch {
    answers: Vec<Option<Value>>,
    /// Members yet to be sent, with their slot when an answer will come for them.
    queue: VecDeque<(Value, Option<usize>)>,
}

/// What follows from a batch's step: members to send now, in order, and the batch's whole
/// answer once it is complete (`None` while members are still to be answered, or when there is
/// nothing to answer at all).
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    pub send: Vec<Value>,
    pub answer: Option<Value>,
}

impl Pending {
    /// Whether any batch is still running.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Takes a batch's members (2025-03-26 already checked, see [`refusal`]): those that do
    /// not run get their error in place; the rest run in order, each request's answer awaited
    /// by its id before the members after it are sent.
    pub fn add(&mut self, members: Vec<Value>) -> Step {
        let batch = self.next;
        self.next += 1;
        let mut answers = Vec::with_capacity(members.len());
        let mut queue = VecDeque::with_capacity(members.len());
        for member in members {
            match triage(&member) {
                Err(error) => answers.push(Some(error)),
                Ok(false) => queue.push_back((member, None)),
                Ok(true) => {
                    let key = request_id(&member)
                        .map(Value::to_string)
                        .unwrap_or_default();
                    if self.waiting.contains_key(&key) {
                        // Its answer could not be told from the other request's.
                        answers.push(Some(member_error(
                            &member,
                            "another request of this batch, or one still awaiting its answer, has this id",
                        )));
                        continue;
                    }
                    self.waiting.insert(key, (batch, answers.len()));
                    queue.push_back((member, Some(answers.len())));
                    answers.push(None);
                }
            }
        }
        self.batches.insert(batch, Batch { answers, queue });
        self.advance(batch)
    }

    /// Takes an answer. `Err(answer)` gives it back when no batch awaits it (it goes out on
    /// its own); otherwise the batch's next step.
    pub fn answer(&mut self, answer: Value) -> Result<Step, Value> {
        let Some((batch, slot)) =
            (answer.get("id")).and_then(|id| self.waiting.remove(&id.to_string()))
        else {
            return Err(answer);
        };
        if let Some(b) = self.batches.get_mut(&batch) {
            b.answers[slot] = Some(answer);
        }
        Ok(self.advance(batch))
    }

    /// The client cancelled the request with this id (`notifications/cancelled`), after which
    /// rmcp sends no answer for it, as MCP asks. When a batch awaits it, its place gets a
    /// `-32800` error (the code LSP gives a cancelled request; JSON-RPC has none) and the batch
    /// goes on: a member not yet sent never is. `None` when no batch awaits the id.
    pub fn cancel(&mut self, id: &Value) -> Option<Step> {
        let (batch, slot) = self.waiting.remove(&id.to_string())?;
        let b = self.batches.get_mut(&batch)?;
        b.answers[slot] = Some(json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": -32800, "message": "cancelled by the client"},
        }));
        let before = b.queue.len();
        b.queue.retain(|(_, s)| *s != Some(slot));
        if b.queue.len() < before {
            // Not sent yet, so the member before it is still awaited.
            return Some(Step::default());
        }
        Some(self.advance(batch))
    }

    /// Sends the members up to the next request whose answer is awaited, or ends the batch.
    fn advance(&mut self, batch: u64) -> Step {
        let Some(b) = self.batches.get_mut(&batch) else {
            return Step::default();
        };
        // Nothing of the batch is awaited now (a request is sent only once the one before it
        // was answered), so the members up to the next request go.
        let mut send = Vec::new();
        while let Some((member, slot)) = b.queue.pop_front() {
            send.push(member);
            if slot.is_some() {
                return Step { send, answer: None };
            }
        }
        let all: Vec<Value> = self
            .batches
            .remove(&batch)
            .map(|b| b.answers.into_iter().flatten().collect())
            .unwrap_or_default();
        Step {
            send,
            answer: (!all.is_empty()).then_some(Value::Array(all)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_a_batch_when_it_opens_an_array() {
        assert!(is_array(b" \r\n\t[{}]"));
        assert!(!is_array(b" {\"a\": [1]}"));
        assert!(!is_array(b""));
        assert!(!is_array(b"\xef\xbb\xbf[]"));
    }

    #[test]
    fn batches_belong_to_2025_03_26_and_hold_one_to_a_hundred_messages() {
        let one = [json!({})];
        assert_eq!(refusal(None, &one), None);
        assert_eq!(refusal(Some("2025-03-26"), &one), None);
        for later in ["2025-06-18", "2025-11-25", "2026-07-28"] {
            let why = refusal(Some(later), &one).unwrap();
            assert!(
                why.contains(later) && why.contains("2025-03-26 only"),
                "{why}"
            );
        }
        assert!(refusal(None, &[]).unwrap().contains("empty"));
        assert_eq!(refusal(None, &vec![json!({}); MAX_BATCH]), None);
        let why = refusal(None, &vec![json!({}); MAX_BATCH + 1]).unwrap();
        assert!(why.contains("101 messages"), "{why}");
        // A hostile version is shown cut short.
        let long = "x".repeat(500);
        assert!(refusal(Some(&long), &one).unwrap().len() < 300);
    }

    #[test]
    fn every_answer_in_a_batch_has_an_id() {
        let stray = json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "no"}});
        assert_eq!(as_member_answer(stray)["id"], Value::Null);
        assert!(as_member_answer(json!({"jsonrpc": "2.0", "error": {}}))
            .as_object()
            .unwrap()
            .contains_key("id"));
        let answered = json!({"jsonrpc": "2.0", "id": 3, "result": {}});
        assert_eq!(as_member_answer(answered.clone()), answered);
    }

    #[test]
    fn an_unread_member_is_answered_with_its_id_when_a_request_may_carry_it() {
        for (member, id) in [
            (json!({"id": 7}), json!(7)),
            (json!({"id": "a"}), json!("a")),
            (json!({"id": 1.5}), Value::Null),
            (json!({"id": null}), Value::Null),
            (json!({"id": {"x": 1}}), Value::Null),
            (json!({}), Value::Null),
            (json!(5), Value::Null),
        ] {
            let e = member_error(&member, "why");
            assert_eq!(
                e,
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": "why"}}),
                "{member}"
            );
        }
    }

    #[test]
    fn members_run_unless_they_are_not_messages_or_initialize() {
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
        let notification = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let unknown_method = json!({"jsonrpc": "2.0", "id": "u", "method": "no/such"});
        assert_eq!(triage(&request), Ok(true));
        assert_eq!(triage(&unknown_method), Ok(true), "rmcp answers it -32601");
        assert_eq!(triage(&notification), Ok(false));
        let code = |r: Result<bool, Value>| r.unwrap_err()["error"]["code"].clone();
        assert_eq!(code(triage(&json!([1]))), json!(-32600));
        let old = json!({"jsonrpc": "1.0", "id": 3, "method": "ping"});
        assert_eq!(triage(&old).unwrap_err()["id"], 3);
        let init = json!({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {}});
        let refused = triage(&init).unwrap_err();
        assert_eq!(refused["id"], 2);
        assert!(refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("initialize"));
    }

    #[test]
    fn pending_members_run_one_after_another_and_answer_together_in_order() {
        let mut p = Pending::default();
        let ping = |id: Value| json!({"jsonrpc": "2.0", "id": id, "method": "ping"});
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let bad = json!({"jsonrpc": "1.0", "id": "x", "method": "ping"});
        let members = vec![
            ping(json!(1)),
            bad,
            note.clone(),
            ping(json!("1")),
            ping(json!(1)),
        ];
        // The first request goes; the bad member and the second request with id 1 never run.
        assert_eq!(
            p.add(members.clone()),
            Step {
                send: vec![members[0].clone()],
                answer: None
            }
        );
        // An unknown id is not the batch's; 1 and "1" are told apart.
        let other = json!({"id": 2, "result": {}});
        assert_eq!(p.answer(other.clone()), Err(other));
        let first = json!({"id": 1, "result": {"a": 1}});
        // The notification goes with the request after it, which is then awaited.
        assert_eq!(
            p.answer(first.clone()),
            Ok(Step {
                send: vec![note.clone(), members[3].clone()],
                answer: None
            })
        );
        let second = json!({"id": "1", "result": {"b": 1}});
        let step = p.answer(second.clone()).unwrap();
        assert!(step.send.is_empty());
        let all = step.answer.unwrap();
        let all = all.as_array().unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!((&all[0], &all[2]), (&first, &second));
        assert_eq!(
            (&all[1]["id"], &all[1]["error"]["code"]),
            (&json!("x"), &json!(-32600))
        );
        assert_eq!(all[3]["id"], 1);
        assert!(all[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has this id"));
        assert!(p.is_empty());
        // Notifications only: sent, and nothing to answer.
        assert_eq!(
            p.add(vec![note.clone(), note.clone()]),
            Step {
                send: vec![note.clone(), note],
                answer: None
            }
        );
        // Cancelled: in place, whether sent already or not.
        let members = vec![ping(json!(7)), ping(json!(8)), ping(json!(9))];
        assert_eq!(p.add(members.clone()).send, vec![members[0].clone()]);
        assert_eq!(p.cancel(&json!(8)), Some(Step::default()), "8 was not sent");
        assert_eq!(p.cancel(&json!(99)), None);
        // 7 cancelled while in flight: 9 goes next (8 never does).
        assert_eq!(p.cancel(&json!(7)).unwrap().send, vec![members[2].clone()]);
        let nine = json!({"id": 9, "result": {}});
        let all = p.answer(nine.clone()).unwrap().answer.unwrap();
        let codes: Vec<&Value> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["error"]["code"])
            .collect();
        assert_eq!(codes, [&json!(-32800), &json!(-32800), &Value::Null]);
        assert_eq!(all[2], nine);
        assert!(p.is_empty());
        // Nothing runs: the answer at once.
        let step = p.add(vec![json!(5)]);
        assert!(step.send.is_empty());
        assert_eq!(step.answer.unwrap()[0]["error"]["code"], -32600);
        assert!(p.is_empty());
    }
}
