//! A result set as the console sends it: `RowDescription`, one `DataRow` per
//! row (every value in text format), `CommandComplete`. Column types are
//! those PgBouncer's console uses, so that its exporters read the numbers as
//! numbers.

use std::time::SystemTime;

use crate::activity::format_timestamp;
use crate::protocol::backend::push_message;

/// A column's type, as PgBouncer's console describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Text,
    Int4,
    Int8,
    Numeric,
    /// A timestamp, sent as text (`2025-01-31 12:34:56 UTC`).
    Timestamp,
}

impl Type {
    /// The type's OID and size, as `RowDescription` gives them.
    fn oid_and_size(self) -> (u32, i16) {
        match self {
            Type::Text | Type::Timestamp => (25, -1),
            Type::Int4 => (23, 4),
            Type::Int8 => (20, 8),
            Type::Numeric => (1700, -1),
        }
    }
}

/// One value of a row; `None` is NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell(Option<String>);

impl Cell {
    pub const NULL: Cell = Cell(None);
}

impl From<&str> for Cell {
    fn from(value: &str) -> Self {
        Cell(Some(value.to_string()))
    }
}

impl From<String> for Cell {
    fn from(value: String) -> Self {
        Cell(Some(value))
    }
}

impl From<&String> for Cell {
    fn from(value: &String) -> Self {
        Cell(Some(value.clone()))
    }
}

macro_rules! number_cells {
    ($($t:ty),*) => {
        $(impl From<$t> for Cell {
            fn from(value: $t) -> Self {
                Cell(Some(value.to_string()))
            }
        })*
    };
}
number_cells!(i32, i64, u16, u64, usize);

impl From<bool> for Cell {
    /// As PgBouncer: 1 or 0.
    fn from(value: bool) -> Self {
        Cell(Some(if value { "1" } else { "0" }.to_string()))
    }
}

impl From<SystemTime> for Cell {
    fn from(value: SystemTime) -> Self {
        Cell(Some(format_timestamp(value)))
    }
}

impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(value: Option<T>) -> Self {
        value.map_or(Cell::NULL, Into::into)
    }
}

pub struct ResultSet {
    columns: Vec<(&'static str, Type)>,
    rows: Vec<Vec<Cell>>,
}

impl ResultSet {
    pub fn new(columns: &[(&'static str, Type)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it must have a value for every column.
    pub fn push(&mut self, row: Vec<Cell>) {
        assert_eq!(
            row.len(),
            self.columns.len(),
            "a row of {} values for {} columns",
            row.len(),
            self.columns.len()
        );
        self.rows.push(row);
    }

    /// Encodes the result set, closed by `CommandComplete` with `tag`.
    pub fn encode(&self, out: &mut Vec<u8>, tag: &str) {
        let mut body = Vec::new();
        body.extend_from_slice(&(self.columns.len() as i16).to_be_bytes());
        for (name, column_type) in &self.columns {
            let (oid, size) = column_type.oid_and_size();
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&0u32.to_be_bytes()); // no table
            body.extend_from_slice(&0i16.to_be_bytes()); // no column number
            body.extend_from_slice(&oid.to_be_bytes());
            body.extend_from_slice(&size.to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes()); // no type modifier
            body.extend_from_slice(&0i16.to_be_bytes()); // text format
        }
        push_message(out, b'T', &body);
        for row in &self.rows {
            body.clear();
            body.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for Cell(value) in row {
                match value {
                    Some(value) => {
                        body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                        body.extend_from_slice(value.as_bytes());
                    }
                    None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
            push_message(out, b'D', &body);
        }
        command_complete(out, tag);
    }
}

/// `CommandComplete` with `tag`.
pub fn command_complete(out: &mut Vec<u8>, tag: &str) {
    let mut body = tag.as_bytes().to_vec();
    body.push(0);
    push_message(out, b'C', &body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_set_is_described_then_sent_row_by_row() {
        let mut set = ResultSet::new(&[("name", Type::Text), ("items", Type::Int4)]);
        set.push(vec!["databases".into(), 3.into()]);
        set.push(vec![Cell::NULL, Option::<i32>::None.into()]);
        let mut out = Vec::new();
        set.encode(&mut out, "SHOW");
        assert_eq!(out[0], b'T');
        let description_len = i32::from_be_bytes(out[1..5].try_into().unwrap()) as usize;
        // Two columns: name, then 18 bytes each.
        assert_eq!(description_len, 4 + 2 + (5 + 18) + (6 + 18));
        let rows = &out[1 + description_len..];
        assert_eq!(
            &rows[..25],
            b"D\0\0\0\x18\0\x02\0\0\0\x09databases\0\0\0\x013".as_slice()
        );
        assert_eq!(
            &rows[25..40],
            b"D\0\0\0\x0e\0\x02\xff\xff\xff\xff\xff\xff\xff\xff"
        );
        assert_eq!(&rows[40..], b"C\0\0\0\x09SHOW\0");
    }

    #[test]
    #[should_panic(expected = "a row of 1 values for 2 columns")]
    fn a_short_row_is_a_mistake() {
        let mut set = ResultSet::new(&[("a", Type::Text), ("b", Type::Text)]);
        set.push(vec!["x".into()]);
    }
}
