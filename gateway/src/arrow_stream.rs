//! Arrow IPC output: `Accept: application/vnd.apache.arrow.stream` turns the rows of a request's
//! **last statement** into one Arrow IPC stream (schema, then one record batch).
//!
//! ## Types
//!
//! SQLite types values, not columns: one column may hold an INTEGER in one row and TEXT in the
//! next. Arrow needs one type per column, so each column's type is chosen from the storage
//! classes of its non-null values:
//!
//! | values in the column              | Arrow type  |
//! |-----------------------------------|-------------|
//! | only INTEGER                      | `Int64`     |
//! | only REAL                         | `Float64`   |
//! | INTEGER and REAL, every integer exactly representable (\|i\| ≤ 2^53) | `Float64` |
//! | only TEXT                         | `Utf8`      |
//! | only BLOB                         | `Binary`    |
//! | no non-null value (or no rows)    | `Null`      |
//! | anything else (mixed)             | `Utf8`, every value rendered as text |
//!
//! NULL is a null in any type; every field is nullable.
//!
//! **Mixed columns fall back to text rather than fail**, because the statements have already
//! run — a batch may have committed — by the time rows are encoded: an error then would tell the
//! client "failed" about work that took effect. The renderings are exact: integers in decimal,
//! reals in Rust's shortest round-trip form (`2.0`, `1e300`), TEXT as is, BLOBs in base64 (as in
//! JSON answers). Such a field carries the metadata `borealis:storage_classes` (e.g.
//! `"INTEGER,TEXT"`), so a client can tell a real text column from a fallback. To get a typed
//! column, `CAST` it in SQL.
//!
//! Errors are never Arrow: a failed request answers JSON with the error status, whatever the
//! `Accept` header asked for.

use arrow_array::{
    ArrayRef, BinaryArray, Float64Array, Int64Array, NullArray, RecordBatch, RecordBatchOptions,
    StringArray,
};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, DataType, Field, Schema};
use base64::Engine as _;
use compute_abi::{StatementResult, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The media type of an Arrow IPC stream.
pub const CONTENT_TYPE: &str = "application/vnd.apache.arrow.stream";
/// Field metadata naming the storage classes of a column that fell back to text.
pub const STORAGE_CLASSES_KEY: &str = "borealis:storage_classes";
/// Largest integer magnitude a `Float64` holds exactly.
const EXACT_F64_INT_MAX: i64 = 1 << 53;

/// Whether an `Accept` header asks for an Arrow stream (any listed media range, `q` not 0).
pub fn accepts_arrow(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        media.eq_ignore_ascii_case(CONTENT_TYPE) && !refused
    })
}

/// The storage classes seen in one column, as bits.
const INTEGER: u8 = 1;
const REAL: u8 = 2;
const TEXT: u8 = 4;
const BLOB: u8 = 8;

fn class_names(classes: u8) -> String {
    [
        (INTEGER, "INTEGER"),
        (REAL, "REAL"),
        (TEXT, "TEXT"),
        (BLOB, "BLOB"),
    ]
    .iter()
    .filter(|(bit, _)| classes & bit != 0)
    .map(|(_, name)| *name)
    .collect::<Vec<_>>()
    .join(",")
}

/// How one column is encoded.
#[derive(Debug, PartialEq)]
enum Column {
    Null,
    Int64,
    Float64,
    Utf8,
    Binary,
    /// Mixed storage classes, rendered as text.
    Rendered(u8),
}

fn choose(rows: &[Vec<Value>], col: usize) -> Column {
    let mut classes = 0u8;
    let mut inexact_int = false;
    for row in rows {
        classes |= match &row[col] {
            Value::Null => 0,
            Value::Integer(i) => {
                inexact_int |= i.unsigned_abs() > EXACT_F64_INT_MAX as u64;
                INTEGER
            }
            Value::Real(_) => REAL,
            Value::Text(_) => TEXT,
            Value::Blob(_) => BLOB,
        };
    }
    match classes {
        0 => Column::Null,
        INTEGER => Column::Int64,
        REAL => Column::Float64,
        TEXT => Column::Utf8,
        BLOB => Column::Binary,
        c if c == INTEGER | REAL && !inexact_int => Column::Float64,
        c => Column::Rendered(c),
    }
}

fn render(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Integer(i) => Some(i.to_string()),
        Value::Real(f) => Some(format!("{f:?}")),
        Value::Text(s) => Some(s.clone()),
        Value::Blob(b) => Some(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

fn array(rows: &[Vec<Value>], col: usize, kind: &Column) -> ArrayRef {
    let cells = rows.iter().map(|r| &r[col]);
    match kind {
        Column::Null => Arc::new(NullArray::new(rows.len())),
        Column::Int64 => Arc::new(Int64Array::from_iter(cells.map(|v| match v {
            Value::Integer(i) => Some(*i),
            _ => None,
        }))),
        Column::Float64 => Arc::new(Float64Array::from_iter(cells.map(|v| match v {
            Value::Real(f) => Some(*f),
            Value::Integer(i) => Some(*i as f64), // exact: checked in `choose`
            _ => None,
        }))),
        Column::Utf8 | Column::Rendered(_) => Arc::new(StringArray::from_iter(cells.map(render))),
        Column::Binary => Arc::new(BinaryArray::from_iter(cells.map(|v| match v {
            Value::Blob(b) => Some(b.as_slice()),
            _ => None,
        }))),
    }
}

/// Encodes `result`'s rows as an Arrow IPC stream: the schema, then one record batch holding
/// every row (none for a statement without columns).
pub fn encode(result: &StatementResult) -> Result<Vec<u8>, ArrowError> {
    let width = result.columns.len();
    if let Some((i, row)) = result
        .rows
        .iter()
        .enumerate()
        .find(|(_, r)| r.len() != width)
    {
        return Err(ArrowError::InvalidArgumentError(format!(
            "row {i} has {} values for {width} columns",
            row.len()
        )));
    }
    let kinds: Vec<Column> = (0..width).map(|c| choose(&result.rows, c)).collect();
    let fields: Vec<Field> = result
        .columns
        .iter()
        .zip(&kinds)
        .map(|(name, kind)| {
            let (data_type, classes) = match kind {
                Column::Null => (DataType::Null, None),
                Column::Int64 => (DataType::Int64, None),
                Column::Float64 => (DataType::Float64, None),
                Column::Utf8 => (DataType::Utf8, None),
                Column::Binary => (DataType::Binary, None),
                Column::Rendered(c) => (DataType::Utf8, Some(class_names(*c))),
            };
            let field = Field::new(name, data_type, true);
            match classes {
                Some(c) => field.with_metadata(HashMap::from([(STORAGE_CLASSES_KEY.into(), c)])),
                None => field,
            }
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let mut writer = StreamWriter::try_new(Vec::new(), &schema)?;
    if width > 0 {
        let columns: Vec<ArrayRef> = kinds
            .iter()
            .enumerate()
            .map(|(c, kind)| array(&result.rows, c, kind))
            .collect();
        let batch = RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(result.rows.len())),
        )?;
        writer.write(&batch)?;
    }
    writer.finish()?;
    writer.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use arrow_ipc::reader::StreamReader;

    fn decode(bytes: &[u8]) -> (Arc<Schema>, Vec<RecordBatch>) {
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>().unwrap();
        (schema, batches)
    }

    fn result(columns: &[&str], rows: Vec<Vec<Value>>) -> StatementResult {
        StatementResult {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
            rows_affected: 0,
            last_insert_rowid: None,
        }
    }

    #[test]
    fn typed_columns_round_trip() {
        use Value::*;
        let r = result(
            &["i", "f", "t", "b", "n", "num"],
            vec![
                vec![
                    Integer(1),
                    Real(1.5),
                    Text("a".into()),
                    Blob(vec![0, 1]),
                    Null,
                    Integer(2),
                ],
                vec![Null, Null, Null, Null, Null, Real(0.25)],
                vec![
                    Integer(-7),
                    Real(-2.0),
                    Text("".into()),
                    Blob(vec![]),
                    Null,
                    Null,
                ],
            ],
        );
        let (schema, batches) = decode(&encode(&r).unwrap());
        let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(
            types,
            vec![
                &DataType::Int64,
                &DataType::Float64,
                &DataType::Utf8,
                &DataType::Binary,
                &DataType::Null,
                &DataType::Float64
            ]
        );
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.num_rows(), 3);
        let i = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(i.iter().collect::<Vec<_>>(), vec![Some(1), None, Some(-7)]);
        let f = b.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(
            f.iter().collect::<Vec<_>>(),
            vec![Some(1.5), None, Some(-2.0)]
        );
        let t = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            t.iter().collect::<Vec<_>>(),
            vec![Some("a"), None, Some("")]
        );
        let bl = b.column(3).as_any().downcast_ref::<BinaryArray>().unwrap();
        assert_eq!(
            bl.iter().collect::<Vec<_>>(),
            vec![Some(&[0u8, 1][..]), None, Some(&[][..])]
        );
        assert_eq!(b.column(4).len(), 3);
        let num = b.column(5).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(
            num.iter().collect::<Vec<_>>(),
            vec![Some(2.0), Some(0.25), None]
        );
    }

    #[test]
    fn mixed_columns_fall_back_to_exact_text_and_say_so() {
        use Value::*;
        let big = (1i64 << 53) + 1;
        let r = result(
            &["mixed", "bigmix"],
            vec![
                vec![Integer(1), Integer(big)],
                vec![Text("x".into()), Real(0.5)],
                vec![Real(2.0), Null],
                vec![Blob(vec![255]), Null],
            ],
        );
        let (schema, batches) = decode(&encode(&r).unwrap());
        for (i, classes) in [(0, "INTEGER,REAL,TEXT,BLOB"), (1, "INTEGER,REAL")] {
            let f = schema.field(i);
            assert_eq!(f.data_type(), &DataType::Utf8);
            assert_eq!(
                f.metadata().get(STORAGE_CLASSES_KEY).map(String::as_str),
                Some(classes)
            );
        }
        let m = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![Some("1"), Some("x"), Some("2.0"), Some("/w==")]
        );
        let big_col = batches[0]
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(big_col.value(0), big.to_string(), "no precision lost");
    }

    #[test]
    fn empty_results_still_carry_their_schema() {
        let (schema, batches) = decode(&encode(&result(&["a", "b"], vec![])).unwrap());
        assert_eq!(schema.fields().len(), 2);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].num_rows(), 0);
        let (schema, batches) = decode(&encode(&result(&[], vec![])).unwrap());
        assert!(schema.fields().is_empty());
        assert!(
            batches.is_empty(),
            "a statement without columns has no batch"
        );
    }

    #[test]
    fn ragged_rows_are_an_error_not_a_panic() {
        let r = result(&["a", "b"], vec![vec![Value::Integer(1)]]);
        assert!(encode(&r).is_err());
    }

    #[test]
    fn accept_header_negotiation() {
        assert!(accepts_arrow(CONTENT_TYPE));
        assert!(accepts_arrow(
            "application/json;q=0.5, Application/Vnd.Apache.Arrow.Stream"
        ));
        assert!(!accepts_arrow("application/json"));
        assert!(!accepts_arrow("*/*"));
        assert!(!accepts_arrow("application/vnd.apache.arrow.stream;q=0"));
        assert!(!accepts_arrow("application/vnd.apache.arrow.file"));
    }
}
