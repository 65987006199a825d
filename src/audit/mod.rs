//! From decoded row changes to audit items: mapping rules, value rendering, diffs and attribution.

pub mod assembler;
pub mod attribution;
pub mod chain;
pub mod ddl;
pub mod item;
pub mod mapping;
pub mod redaction;
pub mod summary;
pub mod value;

#[cfg(test)]
mod tests;
