//! Exit reasons: why a child (or a supervisor) stopped.
//!
//! Owns the OTP vocabulary `normal`, `shutdown`, `{shutdown, Term}`, `killed`, errors and contained
//! panics, and the rule that decides which reasons count as *abnormal* for `transient` children.

use std::fmt;

/// Why a child stopped.
///
/// | reason                | produced when                                               | abnormal? |
/// |-----------------------|-------------------------------------------------------------|-----------|
/// | `Normal`              | the actor stopped by itself (`ctx.stop()`, no reason given) | no        |
/// | `Shutdown(None)`      | its supervisor asked it to stop and it did                  | no        |
/// | `Shutdown(Some(t))`   | OTP's `{shutdown, t}`, e.g. `reached_max_restart_intensity` | no        |
/// | `Killed`              | brutal kill, or it outlived its shutdown timeout            | yes       |
/// | `Error(text)`         | the child gave up with [`exit`](crate::exit)                | yes       |
/// | `Panic(text)`         | a panic in one of its handlers or hooks was contained        | yes       |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The child stopped on its own without an error.
    Normal,
    /// The child was shut down, optionally with OTP's `{shutdown, Term}` detail.
    Shutdown(Option<String>),
    /// The child was killed without a chance to finish.
    Killed,
    /// The child stopped because of an error it reported.
    Error(String),
    /// A panic inside the child was caught; the text is the panic message.
    Panic(String),
}

impl ExitReason {
    /// The reason a supervisor exits with when its restart intensity is exceeded.
    pub fn reached_max_restart_intensity() -> Self {
        ExitReason::Shutdown(Some("reached_max_restart_intensity".to_owned()))
    }

    /// `true` for reasons that make a `transient` child restart (everything except `normal`,
    /// `shutdown` and `{shutdown, _}`), exactly as OTP decides.
    ///
    /// ```
    /// use supervisors::ExitReason;
    /// assert!(!ExitReason::Normal.is_abnormal());
    /// assert!(!ExitReason::reached_max_restart_intensity().is_abnormal());
    /// assert!(ExitReason::Panic("boom".into()).is_abnormal());
    /// ```
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, ExitReason::Normal | ExitReason::Shutdown(_))
    }

    /// Every value [`ExitReason::kind`] gives, so that a subscriber can set up its labels
    /// before the first exit.
    pub const KINDS: [&'static str; 5] = ["normal", "shutdown", "killed", "error", "panic"];

    /// A short, closed-set label (`normal`, `shutdown`, `killed`, `error`, `panic`), safe to use as
    /// a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ExitReason::Normal => "normal",
            ExitReason::Shutdown(_) => "shutdown",
            ExitReason::Killed => "killed",
            ExitReason::Error(_) => "error",
            ExitReason::Panic(_) => "panic",
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown(None) => f.write_str("shutdown"),
            ExitReason::Shutdown(Some(t)) => write!(f, "shutdown({t})"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Error(t) => write!(f, "error({t})"),
            ExitReason::Panic(t) => write!(f, "panic({t})"),
        }
    }
}

/// Turns a caught panic payload into its message.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_follows_otp_spelling() {
        assert_eq!(
            ExitReason::reached_max_restart_intensity().to_string(),
            "shutdown(reached_max_restart_intensity)"
        );
        assert_eq!(ExitReason::Panic("x".into()).to_string(), "panic(x)");
        assert_eq!(ExitReason::Shutdown(None).to_string(), "shutdown");
    }

    #[test]
    fn kinds_lists_the_kind_of_every_reason() {
        let all = [
            ExitReason::Normal,
            ExitReason::Shutdown(None),
            ExitReason::Killed,
            ExitReason::Error("e".into()),
            ExitReason::Panic("p".into()),
        ];
        let kinds: Vec<&str> = all.iter().map(ExitReason::kind).collect();
        assert_eq!(kinds, ExitReason::KINDS);
    }

    #[test]
    fn only_normal_and_shutdown_are_not_abnormal() {
        for r in [
            ExitReason::Killed,
            ExitReason::Error("e".into()),
            ExitReason::Panic("p".into()),
        ] {
            assert!(r.is_abnormal(), "{r}");
        }
        assert!(!ExitReason::Shutdown(None).is_abnormal());
    }

    #[test]
    fn panic_payloads_of_both_string_kinds_are_read() {
        let a: Box<dyn std::any::Any + Send> = Box::new("static");
        let b: Box<dyn std::any::Any + Send> = Box::new(String::from("owned"));
        let c: Box<dyn std::any::Any + Send> = Box::new(7u8);
        assert_eq!(panic_message(&*a), "static");
        assert_eq!(panic_message(&*b), "owned");
        assert_eq!(panic_message(&*c), "non-string panic payload");
    }
}
