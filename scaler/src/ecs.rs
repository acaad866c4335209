//! The ECS backend: an ECS service's desiredCount (DescribeServices, UpdateService).

use async_trait::async_trait;
use aws_sdk_ecs::error::DisplayErrorContext;
use staging::{sdk_config, AwsSettings};

use crate::target::{ScaleTarget, TargetError};

/// One ECS service. Tasks running `segnode worker` protect themselves from scale-in while
/// they hold a job ([`crate::TaskProtection`]), so lowering the count never stops a busy one.
#[derive(Debug, Clone)]
pub struct EcsService {
    client: aws_sdk_ecs::Client,
    cluster: String,
    service: String,
}

struct Counts {
    desired: u32,
    running: u32,
}

impl EcsService {
    pub async fn connect(aws: &AwsSettings, cluster: &str, service: &str) -> Self {
        let config = sdk_config(aws).await;
        EcsService {
            client: aws_sdk_ecs::Client::new(&config),
            cluster: cluster.into(),
            service: service.into(),
        }
    }

    pub fn client(&self) -> &aws_sdk_ecs::Client {
        &self.client
    }

    fn error(&self, op: &'static str, message: String) -> TargetError {
        TargetError::Ecs {
            op,
            cluster: self.cluster.clone(),
            service: self.service.clone(),
            message,
        }
    }

    async fn counts(&self) -> Result<Counts, TargetError> {
        let out = self
            .client
            .describe_services()
            .cluster(&self.cluster)
            .services(&self.service)
            .send()
            .await
            .map_err(|e| self.error("DescribeServices", DisplayErrorContext(&e).to_string()))?;
        if let Some(f) = out.failures().first() {
            return Err(self.error(
                "DescribeServices",
                format!(
                    "{} ({})",
                    f.reason().unwrap_or("failure"),
                    f.detail().unwrap_or("")
                ),
            ));
        }
        let s = out
            .services()
            .first()
            .ok_or_else(|| self.error("DescribeServices", "no such service".into()))?;
        let count = |v: i32| u32::try_from(v).unwrap_or(0);
        Ok(Counts {
            desired: count(s.desired_count()),
            running: count(s.running_count()),
        })
    }
}

#[async_trait]
impl ScaleTarget for EcsService {
    fn describe(&self) -> String {
        format!("ecs:{}/{}", self.cluster, self.service)
    }
    async fn desired(&self) -> Result<u32, TargetError> {
        Ok(self.counts().await?.desired)
    }
    async fn running(&self) -> Result<u32, TargetError> {
        Ok(self.counts().await?.running)
    }
    async fn set_desired(&self, count: u32) -> Result<(), TargetError> {
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        self.client
            .update_service()
            .cluster(&self.cluster)
            .service(&self.service)
            .desired_count(count)
            .send()
            .await
            .map_err(|e| self.error("UpdateService", DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }
}
