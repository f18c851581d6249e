//! Dead letters: an event Kafka refuses for good (too large, invalid topic, unroutable, not an
//! outbox event) goes to the dead-letter topic with headers that say why and where it came from,
//! and the stream goes on. Delivering the dead letter acknowledges the event.
//!
//! Headers added: `dlq.reason` (human text), `dlq.original.topic`, and where the event was read
//! (the record's [`Origin`]): `dlq.source.lsn` (a WAL position, `X/Y` as PostgreSQL prints it),
//! `dlq.source.binlog` or `dlq.source.table`. Where the event had a partition of its own (a
//! `partition` placement) or a record timestamp, `dlq.original.partition` and
//! `dlq.original.timestamp` (milliseconds since the Unix epoch) keep them: the dead letter's own
//! partition and timestamp are the dead-letter topic's. The original key, value and headers are
//! kept, so `outbox-relay dlq redrive` can publish the event again, where and as of when it was
//! bound, once its cause is fixed; only when the
//! dead letter is too large for the dead-letter topic too is the value left out (its size is in
//! `dlq.original.value.bytes`), so that the dead letter itself fits; such a one cannot be
//! re-driven.

use crate::record::Origin;
use crate::sink::KafkaMessage;

/// The header that keeps the partition the event was placed on, if it was.
pub const ORIGINAL_PARTITION: &str = "dlq.original.partition";
/// The header that keeps the event's record timestamp (milliseconds since the Unix epoch).
pub const ORIGINAL_TIMESTAMP: &str = "dlq.original.timestamp";

/// Why an event was dead-lettered, and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub reason: String,
    pub origin: Origin,
    /// Whether the value is dropped because it was too large.
    pub drop_value: bool,
}

impl DeadLetter {
    /// The dead-letter message for `original`, bound for `topic`.
    pub fn message(&self, topic: &str, original: KafkaMessage) -> KafkaMessage {
        let mut headers = original.headers;
        headers.push((
            "dlq.reason".to_owned(),
            Some(self.reason.clone().into_bytes()),
        ));
        headers.push((
            "dlq.original.topic".to_owned(),
            Some(original.topic.into_bytes()),
        ));
        headers.push((
            self.origin.header.to_owned(),
            Some(self.origin.value.to_string().into_bytes()),
        ));
        if let Some(partition) = original.partition {
            headers.push((
                ORIGINAL_PARTITION.to_owned(),
                Some(partition.to_string().into_bytes()),
            ));
        }
        if let Some(timestamp) = original.timestamp {
            headers.push((
                ORIGINAL_TIMESTAMP.to_owned(),
                Some(timestamp.to_string().into_bytes()),
            ));
        }
        let letter = KafkaMessage {
            topic: topic.to_owned(),
            partition: None,
            timestamp: None,
            key: original.key,
            value: original.value,
            headers,
        };
        if self.drop_value {
            DeadLetter::without_value(letter)
        } else {
            letter
        }
    }

    /// `letter` without its value, which is too large; `dlq.original.value.bytes` keeps its size.
    pub fn without_value(mut letter: KafkaMessage) -> KafkaMessage {
        if let Some(value) = letter.value.take() {
            letter.headers.push((
                "dlq.original.value.bytes".to_owned(),
                Some(value.len().to_string().into_bytes()),
            ));
        }
        letter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_reason_and_position() {
        let original = KafkaMessage {
            topic: "outbox.event.Order".into(),
            partition: None,
            timestamp: None,
            key: Some(b"1".to_vec()),
            value: Some(vec![b'x'; 10]),
            headers: vec![("id".into(), Some(b"e1".to_vec()))],
        };
        let dl = DeadLetter {
            reason: "Broker: Message size too large".into(),
            origin: Origin {
                header: "dlq.source.lsn",
                value: "1/A0".into(),
            },
            drop_value: true,
        };
        let m = dl.message("outbox.dlq", original);
        assert_eq!(m.topic, "outbox.dlq");
        assert_eq!(m.value, None);
        assert_eq!(m.header("id"), Some(&b"e1"[..]));
        assert_eq!(m.header("dlq.source.lsn"), Some(&b"1/A0"[..]));
        assert_eq!(
            m.header("dlq.original.topic"),
            Some(&b"outbox.event.Order"[..])
        );
        assert_eq!(m.header("dlq.original.value.bytes"), Some(&b"10"[..]));
        // Neither placed nor stamped: no header says so.
        assert_eq!(m.header(ORIGINAL_PARTITION), None);
        assert_eq!(m.header(ORIGINAL_TIMESTAMP), None);
    }

    #[test]
    fn the_placed_partition_and_the_timestamp_are_kept() {
        let original = KafkaMessage {
            topic: "outbox.event.Order".into(),
            partition: Some(3),
            timestamp: Some(1_577_934_245_000),
            key: Some(b"1".to_vec()),
            value: Some(b"{}".to_vec()),
            headers: Vec::new(),
        };
        let dl = DeadLetter {
            reason: "Broker: Message size too large".into(),
            origin: Origin {
                header: "dlq.source.table",
                value: "public.outbox".into(),
            },
            drop_value: false,
        };
        let m = dl.message("outbox.dlq", original);
        // The dead letter goes where the dead-letter topic's partitioner puts it, stamped now.
        assert_eq!((m.partition, m.timestamp), (None, None));
        assert_eq!(m.header(ORIGINAL_PARTITION), Some(&b"3"[..]));
        assert_eq!(m.header(ORIGINAL_TIMESTAMP), Some(&b"1577934245000"[..]));
    }
}
