//! Timestamps: RFC 3339 UTC with milliseconds and a `Z`, one fixed width, so that text order
//! is time order in both backends.

use chrono::{SecondsFormat, Utc};
use std::time::Duration;

pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn rfc3339_ago(d: Duration) -> String {
    let t = Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero());
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
