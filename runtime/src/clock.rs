//! The one place Troupe reads the wall clock, so it can be swapped in one place.

use chrono::{DateTime, Utc};

pub fn now() -> DateTime<Utc> {
    Utc::now()
}
