//! A query as waltrail sends it, built apart from running it: the store's functions build each query with
//! a `*_query` function and run what it returns, and [`super::shapes`] renders the very same queries
//! without a server, so `scripts/check-current-clickhouse` runs on a current ClickHouse the SQL the code
//! sends rather than copies of it.

use std::marker::PhantomData;

use clickhouse::query::{Query, RowCursor};
use clickhouse::sql::Bind;
use clickhouse::{Row, RowOwned, RowRead};

/// A SELECT with the row type it is read as. The type travels with the query because `?fields` becomes
/// that type's columns, and only when the query is fetched as it.
#[must_use]
pub struct Select<R> {
    query: Query,
    row: PhantomData<fn() -> R>,
}

impl<R: Row> Select<R> {
    pub fn new(query: Query) -> Self {
        Select {
            query,
            row: PhantomData,
        }
    }

    /// The SQL this query sends: the text with its bound values in place, as the client substitutes them,
    /// and `?fields` expanded to `R`'s columns. (`Query::sql_display` leaves `?fields` as it is, since the
    /// crate expands it only in `fetch`; [`fields`] lists the same columns the same way.)
    pub fn sql(&self) -> String {
        sql(&self.query).replace("?fields", &fields::<R>())
    }
}

impl<R: RowOwned + RowRead> Select<R> {
    pub fn fetch(self) -> clickhouse::error::Result<RowCursor<R>> {
        self.query.fetch::<R>()
    }

    pub async fn fetch_all(self) -> clickhouse::error::Result<Vec<R>> {
        self.query.fetch_all::<R>().await
    }

    pub async fn fetch_one(self) -> clickhouse::error::Result<R> {
        self.query.fetch_one::<R>().await
    }

    pub async fn fetch_optional(self) -> clickhouse::error::Result<Option<R>> {
        self.query.fetch_optional::<R>().await
    }
}

/// The SQL a statement without `?fields` (an ALTER, an INSERT … VALUES) sends.
pub fn sql(q: &Query) -> String {
    q.sql_display().to_string()
}

/// `R`'s columns as the client lists them for `?fields` and an insert: each quoted as an identifier (by
/// the crate's own quoting), comma-separated, in the struct's order.
pub fn fields<R: Row>() -> String {
    let mut out = String::new();
    for (i, c) in R::COLUMN_NAMES.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Writing into a String cannot fail.
        let _ = clickhouse::sql::Identifier(c).write(&mut out);
    }
    out
}

/// The statement `Client::insert::<R>(table)` sends (with validation off, as [`super::client`] sets it):
/// the crate builds it inside `Insert`, out of reach, so it is spelled here as the crate spells it.
pub fn insert_sql<R: Row>(table: &str) -> String {
    let mut t = String::new();
    let _ = clickhouse::sql::Identifier(table).write(&mut t);
    format!("INSERT INTO {t}({}) FORMAT RowBinary", fields::<R>())
}
