//! Reading server-sent events in tests: one parser for every crate's tests and the bench.

use serde_json::Value;

/// One event: its name, id and JSON data (`Null` when the data is not JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<u64>,
    pub data: Value,
}

/// One event block (the text between blank lines); `None` for comments (keep-alives).
pub fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut event, mut id, mut data) = (None, None, String::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    Some(SseEvent {
        event: event?,
        id,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
    })
}

/// Every event of a whole stream's text, in order.
pub fn parse_all(text: &str) -> Vec<SseEvent> {
    text.split("\n\n").filter_map(parse_block).collect()
}
