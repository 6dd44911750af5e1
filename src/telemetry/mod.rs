//! Telemetry: logs (`tracing`), metrics (`metrics` + Prometheus) and the panic hook.
//!
//! Owns the log format decision (JSON lines Cloud Logging understands, or pretty on a
//! terminal), the trace id taken from `X-Cloud-Trace-Context` (or W3C `traceparent`), and the
//! rule that label values come from closed sets (no tenant id in any label).

pub mod budget;
pub mod events;
pub mod metrics;
pub mod observer;

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, Settings};

/// A duration in milliseconds for a log field, to the microsecond: `31.765`, where
/// `as_secs_f64() * 1e3` wrote `31.765486000000003`.
pub fn log_ms(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

/// The Firestore client's per-attempt lines (see [`filter_directives`]), the `supervisors`
/// crate's own lines, which repeat what the tree's event sink logs (`events::supervision`),
/// and rmcp's below errors: three lines for every MCP request over HTTP (each is a session of
/// its own, and its start dumps the client's capabilities), and a warning for every error a
/// client's call gets back (an unknown tool is the client's mistake, not the service's).
const QUIET: &str = "firestore=error,gcloud_sdk::middleware=off,gcloud_sdk::request_timeouts=off,\
                     supervisors=off,rmcp=error";

/// Turns the guide's `LOG_LEVEL` words into `tracing` filter directives. At `info` and `warn`
/// the Firestore client's lines about each attempt of a request stay out (several a read
/// while Firestore is away: a warning for each attempt sent again, an error for each one that
/// failed or ran out of time); the service tells each outcome itself. Directives given in full
/// are taken as they are.
pub fn filter_directives(level: &str) -> String {
    let l = level.trim().to_ascii_lowercase();
    let l = match l.as_str() {
        "warning" => "warn".to_owned(),
        "critical" | "fatal" => "error".to_owned(),
        _ => l,
    };
    match l.as_str() {
        "info" | "warn" => format!("{l},{QUIET}"),
        _ => l,
    }
}

/// Where logs go and in which format; `sink` lets tests silence them.
pub fn init_tracing(settings: &Settings, to_stderr: bool) {
    let filter = EnvFilter::try_new(filter_directives(&settings.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.log.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => {
            !(if to_stderr {
                std::io::stderr().is_terminal()
            } else {
                std::io::stdout().is_terminal()
            })
        }
    };
    let project = [&settings.gcp.project_id, &settings.firestore.project_id]
        .into_iter()
        .find(|p| !p.is_empty())
        .cloned();
    let registry = tracing_subscriber::registry().with(filter).with(TraceLayer);
    let result = match (json, to_stderr) {
        (true, false) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(CloudJson { project })
                    .with_writer(std::io::stdout),
            )
            .try_init(),
        (true, true) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(CloudJson { project })
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        (false, false) => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
            .try_init(),
        (false, true) => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    // A second init (tests start many apps in one process) keeps the first subscriber.
    let _ = result;
}

/// Logs every panic (actor panics are then contained by the supervisors) and counts it.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        tracing::error!(panic.message = %message, panic.location = %location, thread = %thread, "panic (contained by its supervisor if it was inside an actor)");
        events::panicked();
    }));
}

/// The trace id of a request, stored on its span.
struct TraceId(String);

/// Copies the `trace_id` field of new spans into their extensions so the JSON formatter can
/// attach it to every line logged inside the request.
struct TraceLayer;

/// The span's `trace_id`; an empty one (a request without `X-Cloud-Trace-Context`: the
/// middleware records `%""`, which arrives here formatted) is none, so that no line points at
/// the trace `projects/{p}/traces/` of nothing.
struct TraceVisitor(Option<String>);

impl Visit for TraceVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "trace_id" && !value.is_empty() {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "trace_id" {
            let value = format!("{value:?}");
            let value = value.trim_matches('"');
            if !value.is_empty() {
                self.0 = Some(value.to_owned());
            }
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TraceLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut v = TraceVisitor(None);
        attrs.record(&mut v);
        if let (Some(trace), Some(span)) = (v.0, ctx.span(id)) {
            span.extensions_mut().insert(TraceId(trace));
        }
    }
}

/// Collects an event's fields as JSON.
struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(
            field.name().into(),
            serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number),
        );
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// JSON lines for Cloud Logging: `severity`, `time`, `message`, the trace, then the fields.
struct CloudJson {
    project: Option<String>,
}

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

impl<S, N> FormatEvent<S, N> for CloudJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = JsonVisitor(Map::new());
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("severity".into(), severity(event.metadata().level()).into());
        line.insert("time".into(), crate::clock::now_rfc3339().into());
        line.insert(
            "message".into(),
            fields
                .0
                .remove("message")
                .unwrap_or(Value::String(String::new())),
        );
        line.insert("target".into(), event.metadata().target().into());
        if let Some(scope) = ctx.event_scope() {
            let trace = scope
                .from_root()
                .filter_map(|span| span.extensions().get::<TraceId>().map(|t| t.0.clone()))
                .last();
            if let Some(t) = trace {
                let value = match &self.project {
                    Some(p) => format!("projects/{p}/traces/{t}"),
                    None => t,
                };
                line.insert("logging.googleapis.com/trace".into(), value.into());
            }
        }
        for (k, v) in fields.0 {
            line.entry(k).or_insert(v);
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// The trace id part of an `X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1` header, if well formed.
pub fn trace_id_from_header(value: &str) -> Option<String> {
    let id = value.split('/').next()?.trim();
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| id.to_ascii_lowercase())
}

/// The trace id of a W3C `traceparent: VERSION-TRACE_ID-PARENT_ID-FLAGS` header, if well
/// formed (Trace Context §3.2: two hex digits of version other than `ff`, 32 lowercase hex
/// digits of trace id not all zero, 16 of parent id not all zero, two of flags; a later version
/// may append fields after a dash). Cloud Trace's ids are the same 32 hex digits.
pub fn trace_id_from_traceparent(value: &str) -> Option<String> {
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    let well_formed = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && !zero(trace)
        && hex(parent, 16)
        && !zero(parent)
        && hex(flags, 2)
        && (version != "00" || parts.next().is_none());
    well_formed.then(|| trace.to_owned())
}

/// A request's trace id: `X-Cloud-Trace-Context`'s (SPEC §12; Cloud Run's front end sends it),
/// else the W3C `traceparent`'s (what OpenTelemetry-instrumented callers and Google's newer
/// front ends send).
pub fn request_trace_id(cloud: Option<&str>, traceparent: Option<&str>) -> Option<String> {
    cloud
        .and_then(trace_id_from_header)
        .or_else(|| traceparent.and_then(trace_id_from_traceparent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_durations_print_without_representation_noise() {
        let d = std::time::Duration::from_nanos(31_765_486);
        assert_eq!(log_ms(d).to_string(), "31.765");
        assert_eq!(
            log_ms(std::time::Duration::from_nanos(81_798)).to_string(),
            "0.081"
        );
    }

    #[test]
    fn guide_levels_map_to_tracing_levels() {
        assert_eq!(filter_directives("WARNING"), format!("warn,{QUIET}"));
        assert_eq!(filter_directives("info"), format!("info,{QUIET}"));
        assert_eq!(filter_directives("debug"), "debug");
        assert_eq!(filter_directives("critical"), "error");
        assert_eq!(
            filter_directives("tai_autonomics=debug,info"),
            "tai_autonomics=debug,info"
        );
    }

    #[test]
    fn lines_carry_a_request_s_trace_and_none_without_one() {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(TraceLayer).with(
            tracing_subscriber::fmt::layer()
                .event_format(CloudJson {
                    project: Some("p-1".into()),
                })
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            // As the request middleware records it: with and without the header.
            for trace_id in ["105445aa7843bc8bf206b12000100000", ""] {
                let span = tracing::info_span!("request", trace_id = %trace_id);
                span.in_scope(|| tracing::warn!("request failed"));
            }
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let traces: Vec<Value> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["logging.googleapis.com/trace"].clone()
            })
            .collect();
        assert_eq!(
            traces,
            [
                Value::from("projects/p-1/traces/105445aa7843bc8bf206b12000100000"),
                Value::Null
            ]
        );
    }

    #[test]
    fn cloud_trace_header_yields_only_a_hex_trace_id() {
        assert_eq!(
            trace_id_from_header("105445aa7843bc8bf206b12000100000/1;o=1").as_deref(),
            Some("105445aa7843bc8bf206b12000100000")
        );
        assert_eq!(trace_id_from_header("nothex/1"), None);
        assert_eq!(trace_id_from_header(""), None);
    }

    #[test]
    fn traceparent_yields_its_trace_id_when_well_formed_and_the_cloud_header_comes_first() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let good = format!("00-{id}-00f067aa0ba902b7-01");
        assert_eq!(trace_id_from_traceparent(&good).as_deref(), Some(id));
        // A later version may carry more fields; version 00 may not.
        let later = format!("01-{id}-00f067aa0ba902b7-00-extra");
        assert_eq!(trace_id_from_traceparent(&later).as_deref(), Some(id));
        for bad in [
            format!("00-{id}-00f067aa0ba902b7-01-extra"),
            format!("ff-{id}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{id}-0000000000000000-01"),
            format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase()),
            format!("00-{id}-00f067aa0ba902b7"),
            format!("0-{id}-00f067aa0ba902b7-01"),
            format!("00-{id}z-00f067aa0ba902b7-01"),
            String::new(),
        ] {
            assert_eq!(trace_id_from_traceparent(&bad), None, "{bad}");
        }
        let cloud = "105445aa7843bc8bf206b12000100000/1;o=1";
        assert_eq!(
            request_trace_id(Some(cloud), Some(&good)).as_deref(),
            Some("105445aa7843bc8bf206b12000100000")
        );
        assert_eq!(request_trace_id(None, Some(&good)).as_deref(), Some(id));
        assert_eq!(
            request_trace_id(Some("nothex"), Some(&good)).as_deref(),
            Some(id)
        );
        assert_eq!(request_trace_id(None, None), None);
    }
}
