//! One line of `waltrail check`: what was looked at, how it stands, and the fix when it is not fine.
//!
//! Each layer reports its own findings (capture: Postgres; store: ClickHouse); `check` gathers them. The type
//! lives down here, apart from all of them, so none has to import another to report.

#[derive(Debug, Clone)]
pub struct Finding {
    pub status: Status,
    pub what: String,
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Finding {
    pub fn ok(what: impl Into<String>) -> Self {
        Finding {
            status: Status::Ok,
            what: what.into(),
            fix: None,
        }
    }

    pub fn warn(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            status: Status::Warn,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            status: Status::Fail,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
}
