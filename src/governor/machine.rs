//! The governor state machine (SPEC §4), pure: no actor, no I/O, no clock. The actor feeds it
//! one input at a time with the facts it needs (the entitlement gate, the time, a fresh action
//! id) and carries out what it returns: the receipts to append (in order), the answer for the
//! caller, and the effects (start or cancel an action, arm or disarm the state timeout).
//!
//! States: `boot`, `stable`, `warning`, `intervening`, `refusing`. Thresholds are inclusive.
//! One action (or tool) in flight at a time; signals arriving meanwhile are postponed (bounded)
//! and replayed in order once it ends.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::receipts::store::records_state;
use crate::receipts::{Receipt, ReceiptType};

/// A governor's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Boot,
    Stable,
    Warning,
    Intervening,
    Refusing,
}

impl State {
    /// Every state's name, as receipts record it.
    pub const NAMES: &'static [&'static str] =
        &["boot", "stable", "warning", "intervening", "refusing"];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Boot => "boot",
            State::Stable => "stable",
            State::Warning => "warning",
            State::Intervening => "intervening",
            State::Refusing => "refusing",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "boot" => State::Boot,
            "stable" => State::Stable,
            "warning" => State::Warning,
            "intervening" => State::Intervening,
            "refusing" => State::Refusing,
            _ => return None,
        })
    }
}

/// Inclusive thresholds (per SKU; defaults 60 and 80).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub warning: f64,
    pub action: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            warning: 60.0,
            action: 80.0,
        }
    }
}

/// A metric sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub metric: String,
    pub value: f64,
    pub timestamp_ms: u64,
}

/// The action (or tool call) in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub action_id: String,
    /// `scale_up` for threshold actions, the tool name for tool calls.
    pub kind: String,
    /// Where a tool call returns to when it ends (actions end in `stable` or `refusing`).
    pub return_to: State,
    pub is_tool: bool,
    /// A tool call's arguments, for its receipt (null for an action; not in the public view).
    #[serde(skip)]
    pub args: Value,
}

/// Everything a governor remembers.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub state: State,
    /// Boxed: a governor with nothing in flight (nearly all of them) keeps one pointer.
    pub in_flight: Option<Box<InFlight>>,
    pub postponed: VecDeque<Signal>,
    /// 32 bits, packed beside `state`: a million governors each carry one.
    pub postpone_capacity: u32,
    pub thresholds: Thresholds,
}

impl Machine {
    pub fn new(thresholds: Thresholds, postpone_capacity: usize) -> Self {
        Machine {
            state: State::Boot,
            in_flight: None,
            postponed: VecDeque::new(),
            postpone_capacity: u32::try_from(postpone_capacity).unwrap_or(u32::MAX),
            thresholds,
        }
    }
}

/// One input.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Signal(Signal),
    /// A tool call whose gates (entitlement, tool, preconditions) were evaluated by the caller.
    ToolCall {
        tool: String,
        args: Value,
        gates: Value,
        refusal: Option<String>,
    },
    /// The tool finished (success or failure), with its result.
    ToolFinished {
        action_id: String,
        ok: bool,
        result: Value,
    },
    ActionCompleted {
        action_id: String,
        result: Value,
    },
    ActionFailed {
        action_id: String,
        error: String,
    },
    /// The state timeout of `intervening` fired for this action.
    ActionTimedOut {
        action_id: String,
    },
    EntitlementChanged {
        active: bool,
    },
    Reset,
    /// After a restart that lost a tool call in flight: replays the signals it had postponed
    /// (see [`restore`]).
    Resume,
}

impl Input {
    /// The action or tool call this input reports the outcome of.
    pub fn outcome_of(&self) -> Option<&str> {
        match self {
            Input::ToolFinished { action_id, .. }
            | Input::ActionCompleted { action_id, .. }
            | Input::ActionFailed { action_id, .. }
            | Input::ActionTimedOut { action_id } => Some(action_id),
            _ => None,
        }
    }
}

/// Facts the machine needs from outside.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Whether the tenant's entitlement is active and not expired right now.
    pub entitled: bool,
    /// The entitlement gate's record for `metadata.gates`.
    pub gates: Value,
    /// An id for an action started by this input.
    pub new_action_id: String,
}

/// A receipt to append: everything but its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptSpec {
    pub kind: ReceiptType,
    pub event_type: &'static str,
    pub state_from: Option<State>,
    pub state_to: Option<State>,
    pub reason: String,
    pub metadata: Value,
}

/// What the caller is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Decided (accepted, or a governed refusal answered with 200 by the caller's protocol).
    Accepted { postponed: bool },
    /// Refused with this HTTP status and reason (`governor_refusing`, `intervening`,
    /// `postpone_queue_full`, …).
    Refused { status: u16, reason: &'static str },
    /// The input made no sense in this state (no receipt).
    Invalid { reason: String },
}

/// Side effects for the actor to carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    StartAction {
        action_id: String,
        kind: String,
        params: Value,
    },
    RunTool {
        action_id: String,
        tool: String,
        args: Value,
    },
    /// The action ends without its executor saying so: `reason` is `entitlement_inactive` or
    /// `timed_out` (the executor is told, see the actor).
    CancelAction {
        action_id: String,
        reason: &'static str,
    },
    ArmTimeout {
        action_id: String,
    },
    DisarmTimeout,
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub receipts: Vec<ReceiptSpec>,
    pub reply: Reply,
    pub effects: Vec<Effect>,
}

fn spec(
    kind: ReceiptType,
    event_type: &'static str,
    from: State,
    to: State,
    reason: impl Into<String>,
    metadata: Value,
) -> ReceiptSpec {
    ReceiptSpec {
        kind,
        event_type,
        state_from: Some(from),
        state_to: Some(to),
        reason: reason.into(),
        metadata,
    }
}

/// A metadata object of members that are `Value`s already, moved in: `json!` would serialise
/// each one into a new `Value` again (on the signal path, a tenth of the governor's CPU).
/// A signal as its receipt records it (`metadata.input`).
fn signal_input(sig: &Signal) -> Value {
    json!({"metric": sig.metric, "value": sig.value, "timestamp_ms": sig.timestamp_ms})
}

fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
    Value::Object(
        members
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn fmt_num(v: f64) -> String {
    let mut s = String::new();
    crate::receipts::jcs::write_number(&mut s, v);
    s
}

impl Machine {
    /// Advances by one input. The caller appends `receipts` in order and only then applies the
    /// returned machine (the state must not advance if the ledger refuses).
    pub fn step(&self, input: Input, facts: &Facts) -> (Machine, Step) {
        let mut next = self.clone();
        let mut receipts = Vec::new();
        let mut effects = Vec::new();

        // boot: the first input passes the entitlement gate first.
        if next.state == State::Boot
            && !matches!(
                input,
                Input::EntitlementChanged { .. } | Input::Reset | Input::Resume
            )
        {
            if facts.entitled {
                receipts.push(spec(
                    ReceiptType::Transition,
                    "entitlement_verified",
                    State::Boot,
                    State::Stable,
                    "entitlement active",
                    object([("gates", facts.gates.clone())]),
                ));
                next.state = State::Stable;
            } else {
                // The refused input is recorded with the refusal, as in `refusing`.
                let (metadata, refused) = match &input {
                    Input::Signal(sig) => (
                        object([("gates", facts.gates.clone()), ("input", signal_input(sig))]),
                        true,
                    ),
                    Input::ToolCall { tool, args, .. } => (
                        object([
                            ("gates", facts.gates.clone()),
                            ("tool", json!(tool)),
                            ("args", args.clone()),
                        ]),
                        true,
                    ),
                    _ => (object([("gates", facts.gates.clone())]), false),
                };
                receipts.push(spec(
                    ReceiptType::Refusal,
                    "entitlement_check_failed",
                    State::Boot,
                    State::Refusing,
                    "entitlement inactive",
                    metadata,
                ));
                next.state = State::Refusing;
                let reply = if refused {
                    Reply::Refused {
                        status: 409,
                        reason: "governor_refusing",
                    }
                } else {
                    Reply::Invalid {
                        reason: "no action in flight".into(),
                    }
                };
                return (
                    next,
                    Step {
                        receipts,
                        reply,
                        effects,
                    },
                );
            }
        }

        // An entitlement that lapsed without this governor having recorded it (an expiry fell
        // due, or the change was learned but its receipt could not be written) moves it to
        // `refusing` first, as the change itself would have: the action in flight is cancelled
        // and the queue dropped. The input then meets a refusing governor: a signal or a tool
        // call is refused as there, and an outcome of the cancelled action or tool is refused
        // with no receipt of its own, so nothing is accepted for a tenant that is not entitled.
        if !facts.entitled
            && !matches!(input, Input::EntitlementChanged { .. } | Input::Reset)
            && matches!(
                next.state,
                State::Stable | State::Warning | State::Intervening
            )
        {
            let (lapsed, step) = next.step(Input::EntitlementChanged { active: false }, facts);
            next = lapsed;
            receipts.extend(step.receipts);
            effects.extend(step.effects);
            if input.outcome_of().is_some() {
                let reply = Reply::Refused {
                    status: 409,
                    reason: "governor_refusing",
                };
                return (
                    next,
                    Step {
                        receipts,
                        reply,
                        effects,
                    },
                );
            }
        }

        let reply = match input {
            Input::Signal(sig) => next.on_signal(sig, facts, &mut receipts, &mut effects),
            Input::ToolCall {
                tool,
                args,
                gates,
                refusal,
            } => {
                let from = next.state;
                match from {
                    State::Refusing => {
                        receipts.push(spec(
                            ReceiptType::Refusal,
                            "tool_call_refused",
                            from,
                            from,
                            "governor_refusing",
                            json!({"tool": tool, "args": args, "gates": gates}),
                        ));
                        Reply::Refused {
                            status: 409,
                            reason: "governor_refusing",
                        }
                    }
                    State::Intervening => {
                        receipts.push(spec(
                            ReceiptType::Refusal,
                            "tool_call_refused",
                            from,
                            from,
                            "intervening",
                            json!({"tool": tool, "args": args, "gates": gates}),
                        ));
                        Reply::Refused {
                            status: 409,
                            reason: "intervening",
                        }
                    }
                    _ => match refusal {
                        Some(reason) => {
                            receipts.push(spec(
                                ReceiptType::Refusal,
                                "tool_call_refused",
                                from,
                                from,
                                reason,
                                json!({"tool": tool, "args": args, "gates": gates}),
                            ));
                            Reply::Refused {
                                status: 200,
                                reason: "gate_refused",
                            }
                        }
                        None => {
                            let action_id = facts.new_action_id.clone();
                            next.in_flight = Some(Box::new(InFlight {
                                action_id: action_id.clone(),
                                kind: tool.clone(),
                                return_to: from,
                                is_tool: true,
                                args: args.clone(),
                            }));
                            next.state = State::Intervening;
                            effects.push(Effect::RunTool {
                                action_id,
                                tool,
                                args,
                            });
                            Reply::Accepted { postponed: false }
                        }
                    },
                }
            }
            Input::ToolFinished {
                action_id,
                ok,
                result,
            } => match next.in_flight.clone() {
                Some(f)
                    if f.is_tool
                        && f.action_id == action_id
                        && next.state == State::Intervening =>
                {
                    next.in_flight = None;
                    next.state = f.return_to;
                    let (event, kind) = if ok {
                        ("tool_call_succeeded", ReceiptType::ToolCall)
                    } else {
                        ("tool_call_failed", ReceiptType::ToolCall)
                    };
                    receipts.push(spec(kind, event, f.return_to, f.return_to, format!("tool {} {}", f.kind, if ok { "succeeded" } else { "failed" }), json!({"tool": f.kind, "args": f.args, "action_id": action_id, "result": result, "gates": facts.gates})));
                    next.replay(facts, &mut receipts, &mut effects);
                    Reply::Accepted { postponed: false }
                }
                _ => Reply::Invalid {
                    reason: format!("no tool call {action_id} in flight"),
                },
            },
            Input::ActionCompleted { action_id, result } => next.end_action(
                &action_id,
                State::Stable,
                "action_completed",
                ReceiptType::Action,
                format!("action {action_id} completed"),
                json!({"result": result}),
                facts,
                &mut receipts,
                &mut effects,
            ),
            Input::ActionFailed { action_id, error } => next.end_action(
                &action_id,
                State::Refusing,
                "action_failed",
                ReceiptType::Action,
                format!("action {action_id} failed: {error}"),
                json!({"error": error}),
                facts,
                &mut receipts,
                &mut effects,
            ),
            Input::ActionTimedOut { action_id } => {
                let reply = next.end_action(
                    &action_id,
                    State::Refusing,
                    "action_timeout",
                    ReceiptType::Action,
                    format!("action {action_id} timed out"),
                    json!({}),
                    facts,
                    &mut receipts,
                    &mut effects,
                );
                if matches!(reply, Reply::Accepted { .. }) {
                    effects.push(Effect::CancelAction {
                        action_id,
                        reason: "timed_out",
                    });
                }
                reply
            }
            Input::EntitlementChanged { active } => {
                let from = next.state;
                match (active, from) {
                    (false, State::Refusing) => Reply::Accepted { postponed: false },
                    (false, _) => {
                        if let Some(f) = next.in_flight.take() {
                            effects.push(Effect::DisarmTimeout);
                            effects.push(Effect::CancelAction {
                                action_id: f.action_id,
                                reason: "entitlement_inactive",
                            });
                        }
                        next.postponed.clear();
                        next.state = State::Refusing;
                        receipts.push(spec(
                            ReceiptType::Transition,
                            "entitlement_changed",
                            from,
                            State::Refusing,
                            "entitlement inactive",
                            object([("gates", facts.gates.clone())]),
                        ));
                        Reply::Accepted { postponed: false }
                    }
                    (true, State::Refusing) => {
                        next.state = State::Stable;
                        receipts.push(spec(
                            ReceiptType::Transition,
                            "entitlement_reactivated",
                            from,
                            State::Stable,
                            "entitlement active again",
                            object([("gates", facts.gates.clone())]),
                        ));
                        Reply::Accepted { postponed: false }
                    }
                    (true, _) => Reply::Accepted { postponed: false },
                }
            }
            Input::Resume => {
                match next.state {
                    State::Stable | State::Warning => {
                        next.replay(facts, &mut receipts, &mut effects)
                    }
                    // As when an action fails: postponed signals meet a refusing governor and
                    // are dropped (their callers were answered `postponed` already).
                    State::Refusing => next.postponed.clear(),
                    State::Boot | State::Intervening => {}
                }
                Reply::Accepted { postponed: false }
            }
            Input::Reset => match next.state {
                // A reset recovers from a failed or timed-out action; it does not stand in for
                // the entitlement, which would move the governor straight back on its next input.
                State::Refusing if !facts.entitled => Reply::Invalid {
                    reason: "the tenant's entitlement is not active: resume it; a reset \
                             recovers from a failed or timed-out action"
                        .into(),
                },
                State::Refusing => {
                    next.state = State::Stable;
                    receipts.push(spec(
                        ReceiptType::Transition,
                        "governor_reset",
                        State::Refusing,
                        State::Stable,
                        "operator reset",
                        json!({}),
                    ));
                    Reply::Accepted { postponed: false }
                }
                s => Reply::Invalid {
                    reason: format!(
                        "reset applies to a refusing governor, this one is {}",
                        s.as_str()
                    ),
                },
            },
        };
        (
            next,
            Step {
                receipts,
                reply,
                effects,
            },
        )
    }

    fn on_signal(
        &mut self,
        sig: Signal,
        facts: &Facts,
        receipts: &mut Vec<ReceiptSpec>,
        effects: &mut Vec<Effect>,
    ) -> Reply {
        let from = self.state;
        let input = signal_input(&sig);
        let t = self.thresholds;
        let thresholds = json!({"warning": t.warning, "action": t.action});
        match from {
            State::Refusing => {
                receipts.push(ReceiptSpec {
                    kind: ReceiptType::Refusal,
                    event_type: "signal_refused",
                    state_from: Some(from),
                    state_to: Some(from),
                    reason: "governor_refusing".into(),
                    metadata: object([("input", input)]),
                });
                Reply::Refused {
                    status: 409,
                    reason: "governor_refusing",
                }
            }
            State::Intervening => {
                if self.postponed.len() >= self.postpone_capacity as usize {
                    receipts.push(ReceiptSpec {
                        kind: ReceiptType::Refusal,
                        event_type: "signal_refused",
                        state_from: Some(from),
                        state_to: Some(from),
                        reason: "postpone_queue_full".into(),
                        metadata: object([("input", input)]),
                    });
                    return Reply::Refused {
                        status: 429,
                        reason: "postpone_queue_full",
                    };
                }
                self.postponed.push_back(sig);
                receipts.push(spec(
                    ReceiptType::Transition,
                    "signal_postponed",
                    from,
                    from,
                    format!("action in flight; {} queued", self.postponed.len()),
                    object([("input", input)]),
                ));
                Reply::Accepted { postponed: true }
            }
            _ => {
                self.apply_signal(&sig, input, thresholds, facts, receipts, effects);
                Reply::Accepted { postponed: false }
            }
        }
    }

    /// The threshold rule, in `stable` or `warning`.
    fn apply_signal(
        &mut self,
        sig: &Signal,
        input: Value,
        thresholds: Value,
        facts: &Facts,
        receipts: &mut Vec<ReceiptSpec>,
        effects: &mut Vec<Effect>,
    ) {
        let from = self.state;
        let (t, v) = (self.thresholds, sig.value);
        if v >= t.action {
            let action_id = facts.new_action_id.clone();
            let params = json!({"metric": sig.metric, "value": v});
            self.in_flight = Some(Box::new(InFlight {
                action_id: action_id.clone(),
                kind: "scale_up".into(),
                return_to: State::Stable,
                is_tool: false,
                args: Value::Null,
            }));
            self.state = State::Intervening;
            receipts.push(spec(
                ReceiptType::Action,
                "action_started",
                from,
                State::Intervening,
                format!(
                    "value {} >= action threshold {}",
                    fmt_num(v),
                    fmt_num(t.action)
                ),
                object([
                    ("input", input),
                    ("thresholds", thresholds),
                    (
                        "action",
                        json!({"action_id": action_id, "type": "scale_up", "params": params}),
                    ),
                    ("gates", facts.gates.clone()),
                ]),
            ));
            effects.push(Effect::StartAction {
                action_id: action_id.clone(),
                kind: "scale_up".into(),
                params,
            });
            effects.push(Effect::ArmTimeout { action_id });
        } else if v >= t.warning {
            self.state = State::Warning;
            receipts.push(spec(
                ReceiptType::Transition,
                "signal_warning",
                from,
                State::Warning,
                format!(
                    "value {} >= warning threshold {}",
                    fmt_num(v),
                    fmt_num(t.warning)
                ),
                object([
                    ("input", input),
                    ("thresholds", thresholds),
                    ("gates", facts.gates.clone()),
                ]),
            ));
        } else {
            self.state = State::Stable;
            receipts.push(spec(
                ReceiptType::Transition,
                "signal_processed",
                from,
                State::Stable,
                format!(
                    "value {} < warning threshold {}",
                    fmt_num(v),
                    fmt_num(t.warning)
                ),
                object([
                    ("input", input),
                    ("thresholds", thresholds),
                    ("gates", facts.gates.clone()),
                ]),
            ));
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one helper for the three ways an action ends"
    )]
    fn end_action(
        &mut self,
        action_id: &str,
        to: State,
        event: &'static str,
        kind: ReceiptType,
        reason: String,
        metadata: Value,
        facts: &Facts,
        receipts: &mut Vec<ReceiptSpec>,
        effects: &mut Vec<Effect>,
    ) -> Reply {
        match &self.in_flight {
            Some(f)
                if !f.is_tool && f.action_id == action_id && self.state == State::Intervening =>
            {
                self.in_flight = None;
                effects.push(Effect::DisarmTimeout);
                let mut meta = metadata;
                meta["action_id"] = json!(action_id);
                receipts.push(spec(kind, event, State::Intervening, to, reason, meta));
                self.state = to;
                if to == State::Refusing {
                    // Postponed signals meet a refusing governor: they are dropped with the
                    // action (their callers were answered `postponed` already).
                    self.postponed.clear();
                } else {
                    self.replay(facts, receipts, effects);
                }
                Reply::Accepted { postponed: false }
            }
            _ => Reply::Invalid {
                reason: format!("no action {action_id} in flight"),
            },
        }
    }

    /// Replays postponed signals in order while the governor is not intervening again.
    fn replay(
        &mut self,
        facts: &Facts,
        receipts: &mut Vec<ReceiptSpec>,
        effects: &mut Vec<Effect>,
    ) {
        while matches!(self.state, State::Stable | State::Warning) {
            let Some(sig) = self.postponed.pop_front() else {
                break;
            };
            let input = json!({"metric": sig.metric, "value": sig.value, "timestamp_ms": sig.timestamp_ms, "replayed": true});
            let t = self.thresholds;
            let mut f = facts.clone();
            f.new_action_id = format!("{}-r{}", facts.new_action_id, receipts.len());
            self.apply_signal(
                &sig,
                input,
                json!({"warning": t.warning, "action": t.action}),
                &f,
                receipts,
                effects,
            );
        }
        // A replayed signal started another action with signals still queued: its receipt
        // records them, so that a governor rebuilt from the chain has the whole queue.
        if self.state == State::Intervening && !self.postponed.is_empty() {
            if let Some(r) = receipts
                .iter_mut()
                .rev()
                .find(|r| r.event_type == "action_started")
            {
                let queued = self.postponed.iter().map(signal_input).collect();
                r.metadata["postponed"] = Value::Array(queued);
            }
        }
    }
}

/// What a governor was doing when its previous incarnation ended, as its chain tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    pub state: State,
    pub in_flight: Option<InFlight>,
    /// When the action in flight started (the `action_started` receipt's time, ms since the
    /// epoch): its state timeout runs from then, across restarts.
    pub started_ms: Option<u64>,
    pub postponed: VecDeque<Signal>,
    /// The postponed signals wait for nothing: a tool call was in flight (tool calls write no
    /// receipt until they end) and ended with the incarnation, so they are replayed now.
    pub replay: bool,
}

/// Whether a rebuild reading its chain backwards stops at `r`: `r` started an action, or it
/// records a governor state other than `intervening`. An entitlement receipt, or an
/// entitlement refusal (whose states are the entitlement's status), is read past.
pub fn is_restore_boundary(r: &Receipt) -> bool {
    r.event_type == "action_started"
        || (records_state(r, State::NAMES) && r.state_to.as_deref() != Some("intervening"))
}

/// Rebuilds a governor from the receipts since it last left a state other than `intervening`.
/// `boundary` is the newest receipt that either started an action (`action_started`) or
/// recorded another governor state; `tail` is every receipt after it, oldest first. The queue
/// is the one `action_started` recorded (signals still queued when a replayed signal started
/// it) followed by the signal of each `signal_postponed` in the tail.
pub fn restore(boundary: &Receipt, tail: &[Receipt]) -> Option<Restored> {
    let queued_here = tail.iter().filter(|r| r.event_type == "signal_postponed");
    let queued_before = boundary.metadata["postponed"]
        .as_array()
        .into_iter()
        .flatten();
    let postponed: VecDeque<Signal> = queued_before
        .chain(queued_here.map(|r| &r.metadata["input"]))
        .filter_map(|v| Signal::deserialize(v).ok())
        .collect();
    if boundary.event_type == "action_started" {
        let a = &boundary.metadata["action"];
        return Some(Restored {
            state: State::Intervening,
            in_flight: Some(InFlight {
                action_id: a["action_id"].as_str().unwrap_or_default().to_owned(),
                kind: a["type"].as_str().unwrap_or("scale_up").to_owned(),
                return_to: State::Stable,
                is_tool: false,
                args: Value::Null,
            }),
            started_ms: crate::clock::millis_of(&boundary.timestamp),
            postponed,
            replay: false,
        });
    }
    let state = State::parse(boundary.state_to.as_deref()?)?;
    Some(Restored {
        state,
        in_flight: None,
        started_ms: None,
        replay: !postponed.is_empty(),
        postponed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipts::ReceiptDraft;

    fn facts(entitled: bool) -> Facts {
        Facts {
            entitled,
            gates: json!({"entitlement": if entitled { "pass" } else { "refuse" }}),
            new_action_id: "act-1".into(),
        }
    }

    fn sig(v: f64) -> Input {
        Input::Signal(Signal {
            metric: "cpu".into(),
            value: v,
            timestamp_ms: 1,
        })
    }

    fn at(state: State) -> Machine {
        let mut m = Machine::new(Thresholds::default(), 2);
        m.state = state;
        if state == State::Intervening {
            m.in_flight = Some(Box::new(InFlight {
                action_id: "act-0".into(),
                kind: "scale_up".into(),
                return_to: State::Stable,
                is_tool: false,
                args: Value::Null,
            }));
        }
        m
    }

    fn events(s: &Step) -> Vec<&'static str> {
        s.receipts.iter().map(|r| r.event_type).collect()
    }

    fn tool(refusal: Option<&str>) -> Input {
        Input::ToolCall {
            tool: "health".into(),
            args: json!({}),
            gates: json!({"entitlement": "pass"}),
            refusal: refusal.map(str::to_owned),
        }
    }

    #[test]
    fn state_names_are_every_state_once() {
        let parsed: Vec<&str> = State::NAMES
            .iter()
            .filter_map(|n| State::parse(n))
            .map(State::as_str)
            .collect();
        assert_eq!(parsed, State::NAMES);
        for s in [
            State::Boot,
            State::Stable,
            State::Warning,
            State::Intervening,
            State::Refusing,
        ] {
            assert!(State::NAMES.contains(&s.as_str()));
        }
    }

    #[test]
    fn boot_entitled_first_input_is_verified_then_handled_as_in_stable() {
        let (m, s) = at(State::Boot).step(sig(50.0), &facts(true));
        assert_eq!(events(&s), ["entitlement_verified", "signal_processed"]);
        assert_eq!(m.state, State::Stable);
        assert_eq!(s.receipts[0].state_from, Some(State::Boot));
    }

    #[test]
    fn boot_not_entitled_refuses_the_input_and_goes_refusing() {
        let (m, s) = at(State::Boot).step(sig(50.0), &facts(false));
        assert_eq!(
            (events(&s), m.state),
            (vec!["entitlement_check_failed"], State::Refusing)
        );
        assert_eq!(
            s.reply,
            Reply::Refused {
                status: 409,
                reason: "governor_refusing"
            }
        );
        // The refusal records what it refused, as a refusal in `refusing` does.
        assert_eq!(
            s.receipts[0].metadata["input"],
            json!({"metric": "cpu", "value": 50.0, "timestamp_ms": 1})
        );
        let (_, s) = at(State::Boot).step(tool(None), &facts(false));
        assert_eq!(events(&s), ["entitlement_check_failed"]);
        let metadata = &s.receipts[0].metadata;
        assert_eq!(
            (&metadata["tool"], &metadata["args"]),
            (&json!("health"), &json!({}))
        );
        assert!(metadata.get("input").is_none());
    }

    #[test]
    fn stable_below_warning_stays() {
        let (m, s) = at(State::Stable).step(sig(59.999), &facts(true));
        assert_eq!(
            (events(&s), m.state),
            (vec!["signal_processed"], State::Stable)
        );
    }

    #[test]
    fn stable_or_warning_between_thresholds_goes_warning_inclusively() {
        for from in [State::Stable, State::Warning] {
            let (m, s) = at(from).step(sig(60.0), &facts(true));
            assert_eq!(
                (events(&s), m.state),
                (vec!["signal_warning"], State::Warning),
                "{from:?}"
            );
            assert_eq!(s.receipts[0].reason, "value 60 >= warning threshold 60");
        }
    }

    #[test]
    fn warning_below_warning_returns_to_stable() {
        let (m, s) = at(State::Warning).step(sig(10.0), &facts(true));
        assert_eq!(
            (events(&s), m.state, s.receipts[0].state_from),
            (
                vec!["signal_processed"],
                State::Stable,
                Some(State::Warning)
            )
        );
    }

    #[test]
    fn stable_or_warning_at_the_action_threshold_starts_scale_up() {
        for from in [State::Stable, State::Warning] {
            let (m, s) = at(from).step(sig(80.0), &facts(true));
            assert_eq!(
                (events(&s), m.state),
                (vec!["action_started"], State::Intervening)
            );
            assert_eq!(s.receipts[0].kind, ReceiptType::Action);
            assert!(
                matches!(&s.effects[0], Effect::StartAction { kind, .. } if kind == "scale_up")
            );
            assert!(matches!(&s.effects[1], Effect::ArmTimeout { .. }));
            assert_eq!(m.in_flight.as_ref().unwrap().action_id, "act-1");
        }
    }

    #[test]
    fn tool_call_with_gates_passing_runs_while_intervening_and_returns() {
        for from in [State::Stable, State::Warning] {
            let (m, s) = at(from).step(tool(None), &facts(true));
            assert_eq!(
                (m.state, s.reply.clone()),
                (State::Intervening, Reply::Accepted { postponed: false })
            );
            assert!(
                s.receipts.is_empty(),
                "the receipt comes when the tool ends"
            );
            for (ok, event) in [(true, "tool_call_succeeded"), (false, "tool_call_failed")] {
                let (back, s) = m.step(
                    Input::ToolFinished {
                        action_id: "act-1".into(),
                        ok,
                        result: json!({}),
                    },
                    &facts(true),
                );
                assert_eq!((events(&s), back.state), (vec![event], from));
            }
        }
    }

    #[test]
    fn tool_call_refused_by_a_gate_stays() {
        let (m, s) = at(State::Stable).step(tool(Some("tool_not_entitled")), &facts(true));
        assert_eq!(
            (events(&s), m.state),
            (vec!["tool_call_refused"], State::Stable)
        );
        assert_eq!(s.receipts[0].reason, "tool_not_entitled");
    }

    #[test]
    fn intervening_postpones_signals_answers_at_once_and_refuses_when_full() {
        let m = at(State::Intervening);
        let (m, s1) = m.step(sig(10.0), &facts(true));
        let (m, s2) = m.step(sig(70.0), &facts(true));
        assert_eq!(
            (s1.reply.clone(), events(&s1)),
            (
                Reply::Accepted { postponed: true },
                vec!["signal_postponed"]
            )
        );
        assert_eq!(s2.reply, Reply::Accepted { postponed: true });
        let (m, s3) = m.step(sig(20.0), &facts(true));
        assert_eq!(
            (s3.reply.clone(), events(&s3)),
            (
                Reply::Refused {
                    status: 429,
                    reason: "postpone_queue_full"
                },
                vec!["signal_refused"]
            )
        );
        assert_eq!(m.postponed.len(), 2);
    }

    #[test]
    fn intervening_refuses_tool_calls() {
        let (m, s) = at(State::Intervening).step(tool(None), &facts(true));
        assert_eq!(
            (events(&s), s.reply.clone(), m.state),
            (
                vec!["tool_call_refused"],
                Reply::Refused {
                    status: 409,
                    reason: "intervening"
                },
                State::Intervening
            )
        );
    }

    #[test]
    fn action_completed_returns_to_stable_and_replays_postponed_signals_in_order() {
        let m = at(State::Intervening);
        let (m, _) = m.step(sig(65.0), &facts(true));
        let (m, _) = m.step(sig(10.0), &facts(true));
        let (m, s) = m.step(
            Input::ActionCompleted {
                action_id: "act-0".into(),
                result: json!("advised"),
            },
            &facts(true),
        );
        assert_eq!(
            events(&s),
            ["action_completed", "signal_warning", "signal_processed"]
        );
        assert_eq!((m.state, m.postponed.len()), (State::Stable, 0));
        assert_eq!(s.effects[0], Effect::DisarmTimeout);
    }

    #[test]
    fn a_replayed_signal_over_the_action_threshold_starts_the_next_action_and_keeps_the_rest_queued(
    ) {
        let m = at(State::Intervening);
        let (m, _) = m.step(sig(90.0), &facts(true));
        let (m, _) = m.step(sig(10.0), &facts(true));
        let (m, s) = m.step(
            Input::ActionCompleted {
                action_id: "act-0".into(),
                result: json!(null),
            },
            &facts(true),
        );
        assert_eq!(events(&s), ["action_completed", "action_started"]);
        assert_eq!((m.state, m.postponed.len()), (State::Intervening, 1));
        // The new action's receipt records what is still queued, for a rebuild.
        assert_eq!(
            s.receipts[1].metadata["postponed"],
            json!([{"metric": "cpu", "value": 10.0, "timestamp_ms": 1}])
        );
    }

    /// A sealed receipt of `event` that moves to `to`, with `metadata`.
    fn receipt(event: &'static str, to: State, metadata: Value) -> Receipt {
        ReceiptDraft::new("t", ReceiptType::Transition, event, "r")
            .states(Some(to.as_str()), Some(to.as_str()))
            .metadata(metadata)
            .seal(None, "n", "2026-01-01T00:00:00.000Z".into())
    }

    #[test]
    fn a_rebuild_restores_the_action_and_the_whole_queue_in_order() {
        let started = receipt(
            "action_started",
            State::Intervening,
            json!({"action": {"action_id": "a-9", "type": "scale_up"},
                   "postponed": [{"metric": "cpu", "value": 1.0, "timestamp_ms": 1}]}),
        );
        let tail = [
            receipt(
                "signal_postponed",
                State::Intervening,
                json!({"input": {"metric": "cpu", "value": 2.0, "timestamp_ms": 2}}),
            ),
            receipt(
                "signal_refused",
                State::Intervening,
                json!({"input": {"metric": "cpu", "value": 3.0, "timestamp_ms": 3}}),
            ),
            receipt(
                "signal_postponed",
                State::Intervening,
                json!({"input": {"metric": "cpu", "value": 4.0, "timestamp_ms": 4, "replayed": true}}),
            ),
        ];
        let r = restore(&started, &tail).unwrap();
        assert_eq!((r.state, r.replay), (State::Intervening, false));
        assert_eq!(r.in_flight.unwrap().action_id, "a-9");
        let values: Vec<f64> = r.postponed.iter().map(|s| s.value).collect();
        assert_eq!(
            values,
            [1.0, 2.0, 4.0],
            "the refused signal was never queued"
        );
    }

    #[test]
    fn signals_postponed_behind_a_tool_call_lost_in_a_restart_are_replayed() {
        // Tool calls write no receipt until they end: the chain shows `warning`, then
        // postponements.
        let before = receipt("signal_warning", State::Warning, json!({}));
        let tail = [receipt(
            "signal_postponed",
            State::Intervening,
            json!({"input": {"metric": "cpu", "value": 85.0, "timestamp_ms": 5}}),
        )];
        let r = restore(&before, &tail).unwrap();
        assert_eq!(
            (r.state, r.in_flight.is_none(), r.replay),
            (State::Warning, true, true)
        );
        let mut m = Machine::new(Thresholds::default(), 2);
        m.state = r.state;
        m.postponed = r.postponed;
        let (m, s) = m.step(Input::Resume, &facts(true));
        assert_eq!(events(&s), ["action_started"]);
        assert_eq!((m.state, m.postponed.len()), (State::Intervening, 0));
        // Nothing queued, nothing to replay; a refusing governor drops the queue.
        assert!(!restore(&before, &[]).unwrap().replay);
        let mut m = Machine::new(Thresholds::default(), 2);
        m.state = State::Refusing;
        m.postponed.push_back(Signal {
            metric: "cpu".into(),
            value: 1.0,
            timestamp_ms: 1,
        });
        let (m, s) = m.step(Input::Resume, &facts(true));
        assert!(s.receipts.is_empty() && m.postponed.is_empty());
    }

    #[test]
    fn action_failed_or_timed_out_goes_refusing() {
        let (m, s) = at(State::Intervening).step(
            Input::ActionFailed {
                action_id: "act-0".into(),
                error: "webhook 500".into(),
            },
            &facts(true),
        );
        assert_eq!(
            (events(&s), m.state),
            (vec!["action_failed"], State::Refusing)
        );
        let (m, s) = at(State::Intervening).step(
            Input::ActionTimedOut {
                action_id: "act-0".into(),
            },
            &facts(true),
        );
        assert_eq!(
            (events(&s), m.state),
            (vec!["action_timeout"], State::Refusing)
        );
        // The executor is told the action was given up on.
        assert_eq!(
            s.effects.last(),
            Some(&Effect::CancelAction {
                action_id: "act-0".into(),
                reason: "timed_out"
            })
        );
    }

    #[test]
    fn a_completion_for_another_action_is_an_error_reply_and_changes_nothing() {
        let before = at(State::Intervening);
        let (m, s) = before.step(
            Input::ActionCompleted {
                action_id: "other".into(),
                result: json!(null),
            },
            &facts(true),
        );
        assert!(matches!(s.reply, Reply::Invalid { .. }));
        assert!(s.receipts.is_empty());
        assert_eq!(m, before);
    }

    #[test]
    fn entitlement_loss_from_any_state_goes_refusing_and_cancels_the_action() {
        for from in [State::Stable, State::Warning, State::Intervening] {
            let (m, s) = at(from).step(Input::EntitlementChanged { active: false }, &facts(false));
            assert_eq!(
                (events(&s), m.state),
                (vec!["entitlement_changed"], State::Refusing),
                "{from:?}"
            );
            if from == State::Intervening {
                assert!(s.effects.contains(&Effect::CancelAction {
                    action_id: "act-0".into(),
                    reason: "entitlement_inactive",
                }));
                assert!(m.in_flight.is_none());
            }
        }
    }

    #[test]
    fn a_signal_or_tool_call_meeting_a_lapsed_entitlement_records_the_loss_and_is_refused() {
        // The governor was not told (it hibernated or restarted meanwhile): the gate decides.
        for (input, refused) in [
            (sig(10.0), "signal_refused"),
            (tool(Some("entitlement_inactive")), "tool_call_refused"),
        ] {
            for from in [State::Stable, State::Warning, State::Intervening] {
                let (m, s) = at(from).step(input.clone(), &facts(false));
                assert_eq!(
                    (events(&s), m.state, s.reply.clone()),
                    (
                        vec!["entitlement_changed", refused],
                        State::Refusing,
                        Reply::Refused {
                            status: 409,
                            reason: "governor_refusing"
                        }
                    ),
                    "{from:?}"
                );
                assert_eq!(
                    from == State::Intervening,
                    s.effects
                        .iter()
                        .any(|e| matches!(e, Effect::CancelAction { .. })),
                    "{from:?}"
                );
            }
        }
    }

    #[test]
    fn an_outcome_meeting_a_lapsed_entitlement_records_the_loss_and_is_refused() {
        // The suspension was learned but its receipt could not be written, or the expiry fell
        // due unseen: the action's outcome (a callback, the state timeout) must not take a
        // tenant that is not entitled back to `stable` or replay its queue.
        let outcomes = [
            Input::ActionCompleted {
                action_id: "act-0".into(),
                result: json!("done"),
            },
            Input::ActionFailed {
                action_id: "act-0".into(),
                error: "boom".into(),
            },
            Input::ActionTimedOut {
                action_id: "act-0".into(),
            },
        ];
        for input in outcomes {
            let mut m = at(State::Intervening);
            if let Input::Signal(s) = sig(70.0) {
                m.postponed.push_back(s);
            }
            let (m, s) = m.step(input.clone(), &facts(false));
            assert_eq!(
                (events(&s), m.state, s.reply.clone()),
                (
                    vec!["entitlement_changed"],
                    State::Refusing,
                    Reply::Refused {
                        status: 409,
                        reason: "governor_refusing"
                    }
                ),
                "{input:?}"
            );
            assert!(m.in_flight.is_none() && m.postponed.is_empty(), "{input:?}");
            assert!(
                s.effects.contains(&Effect::CancelAction {
                    action_id: "act-0".into(),
                    reason: "entitlement_inactive"
                }),
                "{input:?}: {:?}",
                s.effects
            );
        }
    }

    #[test]
    fn refusing_refuses_signals_and_tool_calls_with_409() {
        let (_, s) = at(State::Refusing).step(sig(10.0), &facts(true));
        assert_eq!(
            (events(&s), s.reply.clone()),
            (
                vec!["signal_refused"],
                Reply::Refused {
                    status: 409,
                    reason: "governor_refusing"
                }
            )
        );
        let (_, s) = at(State::Refusing).step(tool(None), &facts(true));
        assert_eq!(
            (events(&s), s.reply.clone()),
            (
                vec!["tool_call_refused"],
                Reply::Refused {
                    status: 409,
                    reason: "governor_refusing"
                }
            )
        );
    }

    #[test]
    fn refusing_returns_to_stable_on_reactivation_or_operator_reset() {
        let (m, s) =
            at(State::Refusing).step(Input::EntitlementChanged { active: true }, &facts(true));
        assert_eq!(
            (events(&s), m.state),
            (vec!["entitlement_reactivated"], State::Stable)
        );
        let (m, s) = at(State::Refusing).step(Input::Reset, &facts(true));
        assert_eq!(
            (events(&s), m.state),
            (vec!["governor_reset"], State::Stable)
        );
        let (_, s) = at(State::Stable).step(Input::Reset, &facts(true));
        assert!(
            matches!(s.reply, Reply::Invalid { .. }),
            "reset only applies to refusing"
        );
        // Not while the tenant is not entitled: it stays refusing, and nothing is recorded.
        let (m, s) = at(State::Refusing).step(Input::Reset, &facts(false));
        assert!(matches!(&s.reply, Reply::Invalid { reason } if reason.contains("resume")));
        assert_eq!((events(&s), m.state), (vec![], State::Refusing));
    }

    #[test]
    fn thresholds_are_configurable() {
        let mut m = at(State::Stable);
        m.thresholds = Thresholds {
            warning: 10.0,
            action: 20.0,
        };
        let (m2, s) = m.step(sig(15.0), &facts(true));
        assert_eq!(
            (events(&s), m2.state),
            (vec!["signal_warning"], State::Warning)
        );
        let (_, s) = m.step(sig(20.0), &facts(true));
        assert_eq!(events(&s), ["action_started"]);
    }
}

#[cfg(test)]
mod properties {
    //! Any run of inputs against the pure machine, with the tenant entitled or not at each step.

    use proptest::prelude::*;

    use super::*;
    use crate::receipts::ReceiptDraft;

    /// An input in terms of the machine it meets: outcomes name the action in flight
    /// (`current`) or another one. A tool call that passes its gates runs and ends within the
    /// governor's one handler (Phase 1 tools are synchronous), so it ends as `ok` says.
    #[derive(Debug, Clone)]
    enum Gen {
        Signal(f64),
        Tool {
            refused: bool,
            ok: bool,
        },
        Completed {
            current: bool,
        },
        Failed {
            current: bool,
        },
        TimedOut {
            current: bool,
        },
        Entitlement {
            active: bool,
        },
        /// Not an input: the Entitlements actor appends to the same chain.
        EntitlementReceipt {
            refused: bool,
        },
        Reset,
        Resume,
    }

    fn gen() -> impl Strategy<Value = Gen> {
        prop_oneof![
            6 => prop_oneof![Just(10.0), Just(65.0), Just(85.0), 0.0..100.0f64].prop_map(Gen::Signal),
            2 => (any::<bool>(), any::<bool>()).prop_map(|(refused, ok)| Gen::Tool { refused, ok }),
            2 => any::<bool>().prop_map(|current| Gen::Completed { current }),
            1 => any::<bool>().prop_map(|current| Gen::Failed { current }),
            1 => any::<bool>().prop_map(|current| Gen::TimedOut { current }),
            1 => any::<bool>().prop_map(|active| Gen::Entitlement { active }),
            1 => any::<bool>().prop_map(|refused| Gen::EntitlementReceipt { refused }),
            1 => Just(Gen::Reset),
            1 => Just(Gen::Resume),
        ]
    }

    fn input(g: &Gen, m: &Machine) -> Input {
        let id = |current: bool| match (&m.in_flight, current) {
            (Some(f), true) => f.action_id.clone(),
            _ => "another".to_owned(),
        };
        match g {
            Gen::Signal(v) => Input::Signal(Signal {
                metric: "cpu".into(),
                value: *v,
                timestamp_ms: 1,
            }),
            Gen::Tool { refused, .. } => Input::ToolCall {
                tool: "health".into(),
                args: json!({}),
                gates: json!({}),
                refusal: refused.then(|| "tool_not_entitled".to_owned()),
            },
            Gen::Completed { current } => Input::ActionCompleted {
                action_id: id(*current),
                result: json!(null),
            },
            Gen::Failed { current } => Input::ActionFailed {
                action_id: id(*current),
                error: "e".into(),
            },
            Gen::TimedOut { current } => Input::ActionTimedOut {
                action_id: id(*current),
            },
            Gen::Entitlement { active } | Gen::EntitlementReceipt { refused: active } => {
                Input::EntitlementChanged { active: *active }
            }
            Gen::Reset => Input::Reset,
            Gen::Resume => Input::Resume,
        }
    }

    fn seal(s: &ReceiptSpec) -> Receipt {
        ReceiptDraft::new("t", s.kind, s.event_type, s.reason.clone())
            .states(
                s.state_from.map(State::as_str),
                s.state_to.map(State::as_str),
            )
            .metadata(s.metadata.clone())
            .seal(None, "n", "2026-01-01T00:00:00.000Z".into())
    }

    /// What a governor started on `chain` restores, read as the governor's `rebuild` reads
    /// the store: the last receipt that records a governor state, and if that is in
    /// `intervening` after the action started, back to the action's start.
    fn rebuilt(chain: &[Receipt]) -> Option<Restored> {
        let last = chain
            .iter()
            .rev()
            .find(|r| records_state(r, State::NAMES))?;
        if last.state_to.as_deref() != Some("intervening") || last.event_type == "action_started" {
            return restore(last, &[]);
        }
        let at = chain.iter().rposition(is_restore_boundary)?;
        restore(&chain[at], &chain[at + 1..])
    }

    /// A receipt of the Entitlements actor: a change, or a refused request (whose states are
    /// the entitlement's status, not the governor's).
    fn entitlement_receipt(refused: bool) -> Receipt {
        let (kind, event, from, to) = if refused {
            (
                ReceiptType::Refusal,
                "entitlement_refused",
                "active",
                "active",
            )
        } else {
            (
                ReceiptType::Entitlement,
                "entitlement_suspended",
                "active",
                "suspended",
            )
        };
        ReceiptDraft::new("t", kind, event, "r")
            .states(Some(from), Some(to))
            .seal(None, "n", "2026-01-01T00:00:00.000Z".into())
    }

    const ACCEPTING: &[&str] = &[
        "entitlement_verified",
        "signal_processed",
        "signal_warning",
        "signal_postponed",
        "action_started",
        "action_completed",
        "action_failed",
        "action_timeout",
        "tool_call_succeeded",
        "tool_call_failed",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every receipt starts where the one before left the machine; the machine is in the
        /// state its last receipt records; nothing is accepted for a tenant that is not
        /// entitled; the queue keeps its bound; and a governor rebuilt from the receipts so
        /// far has the machine's state, action in flight and queue.
        #[test]
        fn any_run_keeps_the_chain_and_the_machine_in_step(
            run in proptest::collection::vec((gen(), proptest::bool::weighted(0.8)), 1..60)
        ) {
            let mut m = Machine::new(Thresholds::default(), 2);
            let mut chain: Vec<Receipt> = Vec::new();
            let mut state = State::Boot;
            for (g, entitled) in &run {
                if let Gen::EntitlementReceipt { refused } = g {
                    chain.push(entitlement_receipt(*refused));
                    continue;
                }
                let facts = Facts {
                    entitled: *entitled,
                    gates: json!({}),
                    new_action_id: format!("a{}", chain.len()),
                };
                let i = input(g, &m);
                let (mut next, mut step) = m.step(i.clone(), &facts);
                // As the governor runs a tool call: the tool ends in the same handler, and the
                // receipts of both steps are appended together.
                if let (Gen::Tool { ok, .. }, Some(Effect::RunTool { action_id, .. })) =
                    (g, step.effects.first().cloned())
                {
                    let done = Input::ToolFinished { action_id, ok: *ok, result: json!(null) };
                    let (ended, finished) = next.step(done, &facts);
                    let ended_validly = !matches!(finished.reply, Reply::Invalid { .. });
                    prop_assert!(ended_validly, "the tool in flight ends");
                    next = ended;
                    step.receipts.extend(finished.receipts);
                }
                if matches!(step.reply, Reply::Invalid { .. }) {
                    // The governor records nothing of an invalid input and keeps its machine.
                    continue;
                }
                for r in &step.receipts {
                    prop_assert_eq!(r.state_from, Some(state), "{} after {:?}", r.event_type, i);
                    state = r.state_to.unwrap();
                    prop_assert!(
                        *entitled || !ACCEPTING.contains(&r.event_type),
                        "{} while not entitled, for {:?}", r.event_type, i
                    );
                }
                m = next;
                chain.extend(step.receipts.iter().map(seal));
                prop_assert_eq!(m.state, state, "after {:?}", i);
                prop_assert!(m.postponed.len() <= 2);
                prop_assert_eq!(m.in_flight.is_some(), m.state == State::Intervening, "after {:?}", i);
                let Some(r) = rebuilt(&chain) else {
                    prop_assert_eq!(m.state, State::Boot, "nothing recorded a state, after {:?}", i);
                    continue;
                };
                prop_assert_eq!(r.state, m.state, "after {:?}", i);
                prop_assert_eq!(
                    r.in_flight.map(|f| f.action_id),
                    m.in_flight.as_ref().map(|f| f.action_id.clone()),
                    "after {:?}", i
                );
                let values = |q: &VecDeque<Signal>| q.iter().map(|s| s.value).collect::<Vec<_>>();
                prop_assert_eq!(values(&r.postponed), values(&m.postponed), "after {:?}", i);
            }
        }
    }
}
