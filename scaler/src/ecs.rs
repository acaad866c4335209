//! The ECS backend: an ECS service's desiredCount (DescribeServices, UpdateService), called
//! through [`AwsJsonClient`] (see there why not the generated `aws-sdk-ecs` crate).

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use staging::{sdk_config, AwsSettings};

use crate::awsjson::{AwsJsonClient, CallError};
use crate::target::{ScaleTarget, TargetError};

/// ECS's JSON 1.1 target prefix (`X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Op>`).
const ECS_TARGET: &str = "AmazonEC2ContainerServiceV20141113";

/// One ECS service. Tasks running `segnode worker` protect themselves from scale-in while
/// they hold a job ([`crate::TaskProtection`]), so lowering the count never stops a busy one.
#[derive(Debug, Clone)]
pub struct EcsService {
    client: AwsJsonClient,
    cluster: String,
    service: String,
}

struct Counts {
    desired: u32,
    running: u32,
}

#[derive(Deserialize)]
struct DescribeServicesOutput {
    #[serde(default)]
    services: Vec<ServiceOut>,
    #[serde(default)]
    failures: Vec<Failure>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceOut {
    #[serde(default)]
    desired_count: i64,
    #[serde(default)]
    running_count: i64,
}

#[derive(Deserialize)]
struct Failure {
    reason: Option<String>,
    detail: Option<String>,
}

impl EcsService {
    pub async fn connect(
        aws: &AwsSettings,
        cluster: &str,
        service: &str,
    ) -> Result<Self, TargetError> {
        let config = sdk_config(aws).await;
        let client =
            AwsJsonClient::new(&config, "ecs", ECS_TARGET).map_err(|source| TargetError::Ecs {
                op: "connect",
                cluster: cluster.into(),
                service: service.into(),
                source,
            })?;
        Ok(EcsService {
            client,
            cluster: cluster.into(),
            service: service.into(),
        })
    }

    fn error(&self, op: &'static str, source: CallError) -> TargetError {
        TargetError::Ecs {
            op,
            cluster: self.cluster.clone(),
            service: self.service.clone(),
            source,
        }
    }

    async fn counts(&self) -> Result<Counts, TargetError> {
        const OP: &str = "DescribeServices";
        let answer = self
            .client
            .call(
                OP,
                &json!({"cluster": self.cluster, "services": [self.service]}),
            )
            .await
            .map_err(|e| self.error(OP, e))?;
        let out: DescribeServicesOutput =
            serde_json::from_value(answer).map_err(|e| self.error(OP, CallError::Decode(e)))?;
        if let Some(f) = out.failures.first() {
            let failure = CallError::Service {
                status: 200,
                code: f
                    .reason
                    .as_deref()
                    .unwrap_or("failure")
                    .escape_debug()
                    .to_string(),
                message: f.detail.as_deref().unwrap_or("").escape_debug().to_string(),
            };
            return Err(self.error(OP, failure));
        }
        let s = out.services.first().ok_or_else(|| {
            self.error(
                OP,
                CallError::Service {
                    status: 200,
                    code: "MISSING".into(),
                    message: "no such service in the answer".into(),
                },
            )
        })?;
        let count = |v: i64| u32::try_from(v).unwrap_or(0);
        Ok(Counts {
            desired: count(s.desired_count),
            running: count(s.running_count),
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
        const OP: &str = "UpdateService";
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        self.client
            .call(
                OP,
                &json!({"cluster": self.cluster, "service": self.service, "desiredCount": count}),
            )
            .await
            .map_err(|e| self.error(OP, e))?;
        Ok(())
    }
}
