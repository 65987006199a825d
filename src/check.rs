//! `waltrail check`: every layer's findings, printed with their fixes.

use crate::config::Config;
use crate::finding::{Finding, Status};

/// Ask each layer what it needs and whether it has it.
pub async fn run(cfg: &Config) -> Vec<Finding> {
    let mut findings = crate::capture::check::postgres(cfg).await;
    findings.extend(crate::store::check::clickhouse(&cfg.clickhouse).await);
    findings
}

/// One line per finding, the fix indented under it; returns whether any failed.
pub fn print(findings: &[Finding]) -> bool {
    let mut failed = false;
    for f in findings {
        let tag = match f.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => {
                failed = true;
                "FAIL"
            }
        };
        println!("[{tag}] {}", f.what);
        if let Some(fix) = &f.fix {
            println!("       fix: {fix}");
        }
    }
    failed
}
