//! The JSON text of every message a live query's subscribers get, in
//! pg_reactive's shapes. Rows arrive from the engine as `row_to_json` text
//! and are put in as they are, never parsed again.

use std::sync::Arc;

/// `"query_id"` as a JSON string. A query_id is `[A-Za-z0-9_-]`, but one
/// from a URL is checked before it gets here; escape anyway.
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// The first message on every socket.
pub fn subscribed(query_id: &str, generation: i64) -> String {
    format!(
        r#"{{"type":"subscribed","query_id":{},"gen":{generation}}}"#,
        quoted(query_id)
    )
}

/// The `"inserted":[...],"deleted":[...]` part of a delta or snapshot.
pub fn rows_body(inserted: &[Arc<str>], deleted: &[Arc<str>]) -> String {
    let size: usize = inserted
        .iter()
        .chain(deleted)
        .map(|row| row.len() + 1)
        .sum();
    let mut body = String::with_capacity(size + 28);
    body.push_str(r#""inserted":["#);
    join(&mut body, inserted);
    body.push_str(r#"],"deleted":["#);
    join(&mut body, deleted);
    body.push(']');
    body
}

fn join(out: &mut String, rows: &[Arc<str>]) {
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(row);
    }
}

/// The whole result, as of `seq`.
pub fn snapshot(query_id: &str, seq: i64, generation: i64, rows: &[Arc<str>]) -> String {
    format!(
        r#"{{"type":"snapshot","query_id":{},"seq":{seq},"gen":{generation},{}}}"#,
        quoted(query_id),
        rows_body(rows, &[])
    )
}

/// Rows that entered and left the result; `body` from `rows_body`. The same
/// text `pgr._publish` sends on channel pgr.
pub fn delta(query_id: &str, seq: i64, generation: i64, body: &str) -> String {
    format!(
        r#"{{"query_id":{},"seq":{seq},"gen":{generation},{body}}}"#,
        quoted(query_id)
    )
}

/// Messages up to `seq` were not delivered: fetch the result again.
pub fn overflow(query_id: &str, seq: i64, generation: i64) -> String {
    format!(
        r#"{{"type":"overflow","query_id":{},"seq":{seq},"gen":{generation},"fetch":true}}"#,
        quoted(query_id)
    )
}

/// The result changed (mode notify) or can no longer be computed.
pub fn invalidated(query_id: &str, seq: i64, generation: i64) -> String {
    format!(
        r#"{{"type":"invalidated","query_id":{},"seq":{seq},"gen":{generation}}}"#,
        quoted(query_id)
    )
}

/// query_id was registered again, as generation `generation`.
pub fn resubscribed(query_id: &str, generation: i64) -> String {
    format!(
        r#"{{"type":"resubscribed","query_id":{},"gen":{generation}}}"#,
        quoted(query_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(texts: &[&str]) -> Vec<Arc<str>> {
        texts.iter().map(|text| Arc::from(*text)).collect()
    }

    #[test]
    fn every_frame_is_json_of_the_documented_shape() {
        let body = rows_body(
            &rows(&[r#"{"id":1}"#, r#"{"id":2}"#]),
            &rows(&[r#"{"id":0}"#]),
        );
        let frames = [
            subscribed("q", 3),
            snapshot("q", 7, 3, &rows(&[r#"{"id":1}"#])),
            delta("q", 8, 3, &body),
            overflow("q", 9, 3),
            invalidated("q", 10, 3),
            resubscribed("q", 4),
        ];
        let parsed: Vec<serde_json::Value> = frames
            .iter()
            .map(|frame| serde_json::from_str(frame).unwrap())
            .collect();
        assert_eq!(parsed[0]["type"], "subscribed");
        assert_eq!(parsed[1]["inserted"][0]["id"], 1);
        assert_eq!(parsed[1]["deleted"], serde_json::json!([]));
        assert_eq!(parsed[2]["seq"], 8);
        assert_eq!(parsed[2]["inserted"].as_array().unwrap().len(), 2);
        assert_eq!(parsed[2]["deleted"][0]["id"], 0);
        assert!(parsed[2].get("type").is_none());
        assert_eq!(parsed[3]["fetch"], true);
        assert_eq!(parsed[4]["type"], "invalidated");
        assert_eq!(parsed[5]["gen"], 4);
    }

    #[test]
    fn an_empty_delta_body_is_two_empty_lists() {
        assert_eq!(rows_body(&[], &[]), r#""inserted":[],"deleted":[]"#);
    }
}
