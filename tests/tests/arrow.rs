//! Arrow IPC answers (`Accept: application/vnd.apache.arrow.stream`) against a real cluster:
//! decoded with arrow-ipc's `StreamReader`, they must hold exactly what the JSON answer to the
//! same query holds, for every SQLite storage class, NULLs, mixed columns, replicas and errors.

use arrow_array::{Array, BinaryArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_ipc::reader::StreamReader;
use arrow_schema::{DataType, Schema};
use base64::Engine as _;
use borealis_tests::cluster::TestCluster;
use serde_json::{json, Value};
use std::sync::Arc;

const ARROW: &str = "application/vnd.apache.arrow.stream";
const TENANT: &str = "columnar";

struct ArrowReply {
    status: u16,
    content_type: String,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

async fn post(c: &TestCluster, token: &str, body: Value, accept: &str) -> ArrowReply {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/tenants/{TENANT}/sql", c.url))
        .bearer_auth(token)
        .header(reqwest::header::ACCEPT, accept)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp.bytes().await.expect("body").to_vec();
    ArrowReply {
        status,
        content_type,
        headers,
        bytes,
    }
}

fn decode(bytes: &[u8]) -> (Arc<Schema>, Vec<RecordBatch>) {
    let reader =
        StreamReader::try_new(std::io::Cursor::new(bytes), None).expect("a valid Arrow IPC stream");
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .expect("decodable batches");
    (schema, batches)
}

/// The JSON rendering (API v1) of one Arrow cell, to compare with the JSON answer.
fn cell_json(col: &dyn Array, row: usize) -> Value {
    if col.data_type() == &DataType::Null || col.is_null(row) {
        return Value::Null;
    }
    match col.data_type() {
        DataType::Int64 => json!(col
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(row)),
        DataType::Float64 => {
            json!(col
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .value(row))
        }
        DataType::Utf8 => json!(col
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .value(row)),
        DataType::Binary => json!({"base64": base64::engine::general_purpose::STANDARD
            .encode(col.as_any().downcast_ref::<BinaryArray>().unwrap().value(row))}),
        other => panic!("unexpected column type {other}"),
    }
}

/// Every row of the JSON answer's last result must be the Arrow stream's, cell by cell.
fn assert_same(json_answer: &Value, schema: &Schema, batches: &[RecordBatch]) {
    let results = json_answer["results"].as_array().expect("results");
    let last = results.last().expect("a result");
    let columns: Vec<&str> = last["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, columns);
    let rows = last["rows"].as_array().unwrap();
    let arrow_rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(arrow_rows, rows.len());
    let mut i = 0;
    for b in batches {
        for r in 0..b.num_rows() {
            for (c, want) in rows[i].as_array().unwrap().iter().enumerate() {
                let got = cell_json(b.column(c).as_ref(), r);
                let field = schema.field(c);
                let mixed = field.metadata().contains_key("borealis:storage_classes");
                match (want, &got) {
                    // A mixed column renders numbers as text.
                    (Value::Number(n), Value::String(s)) if mixed => {
                        assert_eq!(s.parse::<f64>().ok(), n.as_f64(), "row {i} col {c}")
                    }
                    (Value::Object(o), Value::String(s)) if mixed => {
                        assert_eq!(Some(&json!(s)), o.get("base64"), "row {i} col {c}")
                    }
                    // Integers widened to Float64 in a numeric column.
                    (Value::Number(n), Value::Number(m)) => {
                        assert_eq!(n.as_f64(), m.as_f64(), "row {i} col {c}")
                    }
                    _ => assert_eq!(&got, want, "row {i} col {c} ({})", field.data_type()),
                }
            }
            i += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrow_answers_match_json_answers() {
    let c = TestCluster::start().await;
    let token = c.create_tenant(TENANT).await;
    c.sql(
        TENANT,
        &token,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, r REAL, s TEXT, b BLOB, num, mixed)",
    )
    .await
    .ok();
    let rows = [
        json!([1, 1.5, "one", {"base64": "AAEC"}, 10, 7]),
        json!([2, null, "", {"base64": ""}, 2.5, "seven"]),
        json!([3, -0.25, null, null, null, {"base64": "/w=="}]),
        json!([4, 1e300, "ünïcødé", {"base64": "AA=="}, -3, 0.5]),
    ];
    for params in rows {
        c.sql_params(
            TENANT,
            &token,
            "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)",
            params,
        )
        .await
        .ok();
    }
    let query = json!({"sql": "SELECT id, r, s, b, num, mixed, NULL AS empty FROM t ORDER BY id"});
    let json_answer = c
        .request(
            reqwest::Method::POST,
            &format!("/v1/tenants/{TENANT}/sql"),
            &token,
            Some(query.clone()),
        )
        .await
        .ok()
        .body;

    let a = post(&c, &token, query.clone(), ARROW).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
    assert_eq!(a.content_type, ARROW);
    let lsn: u64 = a.headers["borealis-lsn"].to_str().unwrap().parse().unwrap();
    assert_eq!(lsn, json_answer["lsn"].as_u64().unwrap());
    let (schema, batches) = decode(&a.bytes);
    let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
    assert_eq!(
        types,
        vec![
            &DataType::Int64,
            &DataType::Float64,
            &DataType::Utf8,
            &DataType::Binary,
            &DataType::Float64, // INTEGER and REAL: widened, exactly
            &DataType::Utf8,    // INTEGER, TEXT, BLOB, REAL: rendered as text
            &DataType::Null,
        ]
    );
    assert_eq!(
        schema.field(5).metadata()["borealis:storage_classes"],
        "INTEGER,REAL,TEXT,BLOB"
    );
    assert_same(&json_answer, &schema, &batches);

    // From a replica: the same rows, with its read point in a header.
    let mut replica_query = query.clone();
    replica_query["replica"] = json!(true);
    let a = post(&c, &token, replica_query, ARROW).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
    let read_point: u64 = a.headers["borealis-read-point"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        read_point >= lsn,
        "replica at {read_point}, writer at {lsn}"
    );
    let (schema, batches) = decode(&a.bytes);
    assert_same(&json_answer, &schema, &batches);

    // A batch answers with its last statement's rows.
    let batch = json!({"batch": [
        {"sql": "INSERT INTO t (id, s) VALUES (5, 'five')"},
        {"sql": "SELECT id, s FROM t WHERE id >= ? ORDER BY id", "params": [4]},
    ]});
    let a = post(&c, &token, batch, ARROW).await;
    assert_eq!(a.status, 200);
    let (schema, batches) = decode(&a.bytes);
    assert_same(
        &json!({"results": [{"columns": ["id", "s"], "rows": [[4, "ünïcødé"], [5, "five"]]}]}),
        &schema,
        &batches,
    );

    // A statement without rows: a stream with an empty schema.
    let a = post(
        &c,
        &token,
        json!({"sql": "UPDATE t SET s = 'x' WHERE id = 5"}),
        ARROW,
    )
    .await;
    assert_eq!(a.status, 200);
    let (schema, batches) = decode(&a.bytes);
    assert!(schema.fields().is_empty() && batches.is_empty());

    // Errors stay JSON, with their status, whatever was asked for.
    let a = post(&c, &token, json!({"sql": "SELEKT"}), ARROW).await;
    assert_eq!(a.status, 400);
    assert!(
        a.content_type.starts_with("application/json"),
        "{}",
        a.content_type
    );
    let err: Value = serde_json::from_slice(&a.bytes).unwrap();
    assert_eq!(err["error"]["code"], "sql_error");
    let a = post(
        &c,
        &token,
        json!({"sql": "INSERT INTO t (id) VALUES (9)", "replica": true}),
        ARROW,
    )
    .await;
    assert_eq!(a.status, 400);
    let err: Value = serde_json::from_slice(&a.bytes).unwrap();
    assert_eq!(err["error"]["code"], "bad_request");

    // Without the Accept header (or with JSON preferred) the answer is JSON as always.
    let a = post(&c, &token, query, "application/json").await;
    assert!(a.content_type.starts_with("application/json"));
}
