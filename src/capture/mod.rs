//! Reading the write-ahead log: the replication connection and the pgoutput decoder (pure: one message,
//! one function, no I/O), the catalog reads that describe tables and types, the provisioning of the
//! publication and slot, and the Postgres half of `waltrail check`.

pub mod catalog;
pub mod check;
pub mod metrics;
pub mod peek;
pub mod pgoutput;
pub mod provision;
pub mod replication;
pub mod spill;

use std::fmt;
use std::str::FromStr;

/// A WAL position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid LSN {s:?}: expected X/Y"))?;
        let hi = u32::from_str_radix(hi, 16).map_err(|e| format!("invalid LSN {s:?}: {e}"))?;
        let lo = u32::from_str_radix(lo, 16).map_err(|e| format!("invalid LSN {s:?}: {e}"))?;
        Ok(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::Lsn;

    #[test]
    fn lsn_round_trip() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert!("nope".parse::<Lsn>().is_err());
        assert!("1/zz".parse::<Lsn>().is_err());
    }
}
