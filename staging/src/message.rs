//! The queue-message contract beyond segnode's own [`Job`]: the job queue also carries the
//! bucket's S3 event notifications about uploads (`uploads/<name>.zip`, `uploads/<name>/COMPLETE`),
//! possibly inside an SNS envelope. [`parse_message`] tells them apart; the worker expands an
//! upload into a job (`segmenter::upload`). The error says why a message goes to the dead-letter
//! queue.

use serde_json::Value;

use crate::job::{Job, JobError};

/// Why a queue message is neither a job nor an S3 event notification (it is dead-lettered).
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("not a segnode job message nor an S3 event notification: not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("not a segnode job message nor an S3 event notification: not a JSON object")]
    NotAnObject,
    #[error("not a segnode job message: {0}")]
    Job(#[source] JobError),
    #[error(
        "not a segnode job message (no \"version\") nor an S3 event notification (no \"Records\")"
    )]
    Unknown,
    #[error("S3 event notification: \"Records\" is not a list")]
    RecordsNotAList,
    #[error("S3 event notification without records")]
    NoRecords,
    #[error("S3 event notification record {record}: no {field}")]
    MissingField { record: usize, field: String },
    #[error("event record {record} comes from {event_source:?}, not aws:s3")]
    NotS3 { record: usize, event_source: String },
    #[error("S3 event notification record {record}: key {raw:?}: {source}")]
    BadKey {
        record: usize,
        raw: String,
        #[source]
        source: KeyDecodeError,
    },
}

/// Why a key in an S3 event notification does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyDecodeError {
    #[error("a '%' not followed by two hex digits")]
    BadEscape,
    #[error("does not decode to UTF-8")]
    NotUtf8,
}

/// One object named by an S3 event notification record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    /// e.g. `ObjectCreated:Put`, `ObjectCreated:CompleteMultipartUpload`.
    pub event_name: String,
    pub bucket: String,
    /// The key, URL-decoded (S3 encodes keys in events, with `+` for a space).
    pub key: String,
    pub size: Option<u64>,
}

impl S3Object {
    pub fn is_created(&self) -> bool {
        self.event_name.starts_with("ObjectCreated:")
    }
}

/// What a queue message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// segnode's own job message (from the SCP).
    Job(Job),
    /// An S3 event notification (one or more records).
    S3Event(Vec<S3Object>),
    /// The `s3:TestEvent` S3 sends when notifications are configured: nothing to do.
    S3TestEvent { bucket: String },
}

/// Tells a segnode job message from an S3 event notification (also inside an SNS envelope, when
/// the notification went through a topic without raw delivery). The error is the reason the
/// message goes to the dead-letter queue.
pub fn parse_message(body: &str) -> Result<Message, MessageError> {
    parse_value(body, 0)
}

fn parse_value(body: &str, depth: u32) -> Result<Message, MessageError> {
    let value: Value = serde_json::from_str(body).map_err(MessageError::NotJson)?;
    let obj = value.as_object().ok_or(MessageError::NotAnObject)?;
    if obj.contains_key("version") {
        return Job::from_json(body)
            .map(Message::Job)
            .map_err(MessageError::Job);
    }
    if let Some(records) = obj.get("Records") {
        return parse_records(records).map(Message::S3Event);
    }
    if obj.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        let bucket = obj
            .get("Bucket")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        return Ok(Message::S3TestEvent { bucket });
    }
    if depth == 0 && obj.get("Type").and_then(Value::as_str) == Some("Notification") {
        if let Some(inner) = obj.get("Message").and_then(Value::as_str) {
            return parse_value(inner, depth + 1);
        }
    }
    Err(MessageError::Unknown)
}

fn parse_records(records: &Value) -> Result<Vec<S3Object>, MessageError> {
    let records = records.as_array().ok_or(MessageError::RecordsNotAList)?;
    if records.is_empty() {
        return Err(MessageError::NoRecords);
    }
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let field =
                |path: &[&str]| -> Option<&Value> { path.iter().try_fold(r, |v, k| v.get(*k)) };
            let string = |path: &[&str]| -> Result<String, MessageError> {
                field(path)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| MessageError::MissingField {
                        record: i,
                        field: path.join("."),
                    })
            };
            if let Some(source) = field(&["eventSource"]).and_then(Value::as_str) {
                if source != "aws:s3" {
                    return Err(MessageError::NotS3 {
                        record: i,
                        event_source: source.to_string(),
                    });
                }
            }
            let raw_key = string(&["s3", "object", "key"])?;
            Ok(S3Object {
                event_name: string(&["eventName"])?,
                bucket: string(&["s3", "bucket", "name"])?,
                key: decode_s3_key(&raw_key).map_err(|source| MessageError::BadKey {
                    record: i,
                    raw: raw_key.clone(),
                    source,
                })?,
                size: field(&["s3", "object", "size"]).and_then(Value::as_u64),
            })
        })
        .collect()
}

/// Decodes a key as S3 writes it into event notifications: URL-encoded, `+` for a space.
pub fn decode_s3_key(raw: &str) -> Result<String, KeyDecodeError> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(KeyDecodeError::BadEscape)?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| KeyDecodeError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobObject, ObjectKey, Uid};

    /// The example event of the S3 user guide ("Event message structure"), with a key that S3
    /// URL-encodes: a space as '+', and a '+' and a non-ASCII character percent-encoded.
    const AWS_EXAMPLE_EVENT: &str = r#"{
       "Records":[
          {
             "eventVersion":"2.1",
             "eventSource":"aws:s3",
             "awsRegion":"us-west-2",
             "eventTime":"1970-01-01T00:00:00.000Z",
             "eventName":"ObjectCreated:Put",
             "userIdentity":{"principalId":"AIDAJDPLRKLG7UEXAMPLE"},
             "requestParameters":{"sourceIPAddress":"127.0.0.1"},
             "responseElements":{
                "x-amz-request-id":"C3D13FE58DE4C810",
                "x-amz-id-2":"FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"
             },
             "s3":{
                "s3SchemaVersion":"1.0",
                "configurationId":"testConfigRule",
                "bucket":{
                   "name":"amzn-s3-demo-bucket",
                   "ownerIdentity":{"principalId":"A3NL1KOZZKExample"},
                   "arn":"arn:aws:s3:::amzn-s3-demo-bucket"
                },
                "object":{
                   "key":"uploads/brain+scan%2B1+%C3%A9t%C3%A9.zip",
                   "size":1024,
                   "eTag":"d41d8cd98f00b204e9800998ecf8427e",
                   "versionId":"096fKKXTRTtl3on89fVO.nfljtsv6qko",
                   "sequencer":"0055AED6DCD90281E5"
                }
             }
          }
       ]
    }"#;

    /// What S3 sends to a queue when a notification configuration is saved.
    const AWS_TEST_EVENT: &str = r#"{
       "Service":"Amazon S3",
       "Event":"s3:TestEvent",
       "Time":"2014-10-13T15:57:02.089Z",
       "Bucket":"amzn-s3-demo-bucket",
       "RequestId":"5582815E1AEA5ADF",
       "HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"
    }"#;

    #[test]
    fn parses_the_aws_example_event_and_decodes_the_key() {
        let Message::S3Event(objects) = parse_message(AWS_EXAMPLE_EVENT).unwrap() else {
            panic!("not an S3 event");
        };
        assert_eq!(
            objects,
            vec![S3Object {
                event_name: "ObjectCreated:Put".into(),
                bucket: "amzn-s3-demo-bucket".into(),
                key: "uploads/brain scan+1 été.zip".into(),
                size: Some(1024),
            }]
        );
        assert!(objects[0].is_created());
    }

    #[test]
    fn the_test_event_is_recognised() {
        assert_eq!(
            parse_message(AWS_TEST_EVENT).unwrap(),
            Message::S3TestEvent {
                bucket: "amzn-s3-demo-bucket".into()
            }
        );
    }

    #[test]
    fn an_sns_envelope_is_opened() {
        let body = serde_json::json!({
            "Type": "Notification",
            "MessageId": "x",
            "TopicArn": "arn:aws:sns:us-west-2:123456789012:uploads",
            "Message": AWS_EXAMPLE_EVENT,
        })
        .to_string();
        assert!(matches!(parse_message(&body), Ok(Message::S3Event(o)) if o.len() == 1));
    }

    #[test]
    fn job_messages_still_parse_and_garbage_says_why() {
        let job = Job::new(
            Uid::new("1.2").unwrap(),
            vec![JobObject {
                key: ObjectKey::incoming(
                    &Uid::new("1.2").unwrap(),
                    &Uid::new("1.3").unwrap(),
                    &Uid::new("1.4").unwrap(),
                ),
                series_uid: Uid::new("1.3").unwrap(),
                sop_uid: Uid::new("1.4").unwrap(),
            }],
            None,
            1,
        );
        assert_eq!(parse_message(&job.to_json()).unwrap(), Message::Job(job));
        for (body, says) in [
            ("hello", "not JSON"),
            ("[1]", "not a JSON object"),
            ("{\"a\":1}", "no \"Records\""),
            ("{\"version\":9}", "version 9"),
            ("{\"Records\":[]}", "without records"),
            ("{\"Records\":[{\"eventName\":\"ObjectCreated:Put\"}]}", "no s3.object.key"),
            (
                "{\"Records\":[{\"eventSource\":\"aws:sqs\"}]}",
                "not aws:s3",
            ),
            (
                "{\"Records\":[{\"eventName\":\"x\",\"s3\":{\"bucket\":{\"name\":\"b\"},\"object\":{\"key\":\"a%zz\"}}}]}",
                "two hex digits",
            ),
        ] {
            let e = parse_message(body).unwrap_err();
            let e = e.to_string();
            assert!(e.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn decodes_keys_like_s3() {
        assert_eq!(decode_s3_key("a+b%2Bc%2Fd").unwrap(), "a b+c/d");
        assert!(decode_s3_key("%").is_err());
        assert!(decode_s3_key("%ff").is_err());
    }
}
