//! `JobQueue` on Amazon SQS. The redrive policy of the queue moves a message that was
//! received `max_receives` times to the dead-letter queue; `dead_letter` moves one at once
//! (with the reason as a message attribute) for failures that no retry will fix.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};

use crate::aws::{describe, sdk_config, AwsSettings};
use crate::queue::{Backlog, DeadLetter, JobQueue, QueueError, Receipt, Received};

/// Message attribute carrying the reason a job was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "segnode-error";

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct SqsSettings {
    pub queue_url: String,
    /// The queue named in the redrive policy; required for `dead_letter`.
    pub dead_letter_queue_url: Option<String>,
    /// Must equal the redrive policy's maxReceiveCount.
    #[serde(default = "default_max_receives")]
    pub max_receives: u32,
}

fn default_max_receives() -> u32 {
    3
}

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    settings: SqsSettings,
}

impl SqsQueue {
    pub async fn connect(aws: &AwsSettings, settings: SqsSettings) -> Self {
        let sdk = sdk_config(aws).await;
        SqsQueue {
            client: aws_sdk_sqs::Client::new(&sdk),
            settings,
        }
    }

    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    fn is_fifo(&self) -> bool {
        self.settings.queue_url.ends_with(".fifo")
    }

    fn err(&self, op: &'static str, e: impl std::error::Error) -> QueueError {
        QueueError::Remote {
            op,
            queue: self.settings.queue_url.clone(),
            message: describe(&e),
        }
    }

    /// Create `name` and `name-dlq` with a redrive policy after `max_receives` receives
    /// (idempotent: existing queues are reused). For tests and first-time setup; production
    /// queues come from the CloudFormation stack.
    pub async fn create_with_dead_letter(
        aws: &AwsSettings,
        name: &str,
        max_receives: u32,
        visibility: Duration,
    ) -> Result<SqsSettings, QueueError> {
        let sdk = sdk_config(aws).await;
        let client = aws_sdk_sqs::Client::new(&sdk);
        let remote = |op: &'static str, message: String| QueueError::Remote {
            op,
            queue: name.to_string(),
            message,
        };
        let dlq = client
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .map_err(|e| remote("CreateQueue(dlq)", describe(&e)))?;
        let dlq_url = dlq.queue_url().unwrap_or_default().to_string();
        let attrs = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| remote("GetQueueAttributes(dlq)", describe(&e)))?;
        let arn = attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .unwrap_or_default();
        let redrive =
            serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receives})
                .to_string();
        let main = client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility.as_secs().to_string(),
            )
            .send()
            .await
            .map_err(|e| remote("CreateQueue", describe(&e)))?;
        Ok(SqsSettings {
            queue_url: main.queue_url().unwrap_or_default().to_string(),
            dead_letter_queue_url: Some(dlq_url),
            max_receives,
        })
    }
}

fn secs(d: Duration) -> i32 {
    d.as_secs().min(43_200) as i32
}

#[async_trait]
impl JobQueue for SqsQueue {
    async fn send(&self, body: &str, dedup_id: Option<&str>) -> Result<(), QueueError> {
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.settings.queue_url)
            .message_body(body);
        if self.is_fifo() {
            // FIFO queues deduplicate within 5 minutes; standard queues cannot, and a
            // re-sent job is then absorbed by the idempotent SEG UID downstream.
            let id = dedup_id
                .map(str::to_string)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            req = req.message_deduplication_id(&id).message_group_id(id);
        }
        req.send().await.map_err(|e| self.err("SendMessage", e))?;
        Ok(())
    }

    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.settings.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(secs(visibility))
            .wait_time_seconds(secs(wait).min(20))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| self.err("ReceiveMessage", e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| Received {
                message_id: m.message_id().unwrap_or_default().to_string(),
                receipt: Receipt(m.receipt_handle().unwrap_or_default().to_string()),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.settings.queue_url)
            .receipt_handle(&receipt.0)
            .visibility_timeout(secs(visibility))
            .send()
            .await
            .map_err(|e| self.err("ChangeMessageVisibility", e))?;
        Ok(())
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.settings.queue_url)
            .receipt_handle(&receipt.0)
            .send()
            .await
            .map_err(|e| self.err("DeleteMessage", e))?;
        Ok(())
    }

    async fn release(&self, receipt: &Receipt, delay: Duration) -> Result<(), QueueError> {
        self.extend(receipt, delay).await
    }

    async fn dead_letter(&self, message: &Received, reason: &str) -> Result<(), QueueError> {
        let dlq = self
            .settings
            .dead_letter_queue_url
            .as_ref()
            .ok_or_else(|| QueueError::NoDeadLetterQueue(self.settings.queue_url.clone()))?;
        let attr = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason.chars().take(4096).collect::<String>())
            .build()
            .expect("data type is set");
        let mut req = self
            .client
            .send_message()
            .queue_url(dlq)
            .message_body(&message.body)
            .message_attributes(REASON_ATTRIBUTE, attr);
        if dlq.ends_with(".fifo") {
            req = req
                .message_group_id(&message.message_id)
                .message_deduplication_id(&message.message_id);
        }
        req.send()
            .await
            .map_err(|e| self.err("SendMessage(dead letter)", e))?;
        self.delete(&message.receipt).await
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.settings.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| self.err("GetQueueAttributes", e))?;
        let get = |name: QueueAttributeName| -> u64 {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Backlog {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                + get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let dlq = self
            .settings
            .dead_letter_queue_url
            .as_ref()
            .ok_or_else(|| QueueError::NoDeadLetterQueue(self.settings.queue_url.clone()))?;
        // Peek: visibility 0 leaves the messages where they are.
        let out = self
            .client
            .receive_message()
            .queue_url(dlq)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(0)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| self.err("ReceiveMessage(dead letters)", e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| DeadLetter {
                message_id: m.message_id().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: self.settings.max_receives,
                reason: m
                    .message_attributes()
                    .and_then(|a| a.get(REASON_ATTRIBUTE))
                    .and_then(|v| v.string_value())
                    .unwrap_or("moved by the redrive policy after the maximum number of receives")
                    .to_string(),
            })
            .collect())
    }

    fn max_receives(&self) -> u32 {
        self.settings.max_receives
    }

    fn location(&self) -> String {
        self.settings.queue_url.clone()
    }
}
