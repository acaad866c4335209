//! `ObjectStore` on an S3 bucket.

use std::path::Path;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::aws::{describe, sdk_config, AwsSettings};
use crate::keys::ObjectKey;
use crate::store::{ObjectStore, StoreError};

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct S3Settings {
    pub bucket: String,
    /// Optional key prefix inside the bucket (no leading slash), e.g. `segnode/`.
    #[serde(default)]
    pub prefix: String,
    /// Path-style addressing; needed for moto and most S3-compatible servers.
    #[serde(default)]
    pub force_path_style: bool,
    /// Objects at least this large are uploaded in parts.
    #[serde(default = "default_multipart_threshold")]
    pub multipart_threshold: usize,
    #[serde(default = "default_part_size")]
    pub part_size: usize,
}

fn default_multipart_threshold() -> usize {
    32 * 1024 * 1024
}
fn default_part_size() -> usize {
    16 * 1024 * 1024
}

impl S3Settings {
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Settings {
            bucket: bucket.into(),
            prefix: String::new(),
            force_path_style: false,
            multipart_threshold: default_multipart_threshold(),
            part_size: default_part_size(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    settings: S3Settings,
}

impl S3Store {
    pub async fn connect(aws: &AwsSettings, settings: S3Settings) -> Self {
        let sdk = sdk_config(aws).await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(settings.force_path_style)
            .build();
        S3Store {
            client: aws_sdk_s3::Client::from_conf(conf),
            settings,
        }
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    fn full_key(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.settings.prefix, key)
    }

    fn err(&self, op: &'static str, key: &str, e: impl std::error::Error) -> StoreError {
        StoreError::Remote {
            op,
            bucket: self.settings.bucket.clone(),
            key: key.to_string(),
            message: describe(&e),
        }
    }

    async fn put_multipart(
        &self,
        key: &str,
        mut next_part: impl AsyncPartSource,
    ) -> Result<(), StoreError> {
        let bucket = &self.settings.bucket;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result: Result<(), StoreError> = async {
            let mut parts = Vec::new();
            let mut number = 1;
            while let Some(chunk) =
                next_part
                    .next_part(self.settings.part_size)
                    .await
                    .map_err(|source| StoreError::Io {
                        path: key.into(),
                        source,
                    })?
            {
                let out = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(chunk))
                    .send()
                    .await
                    .map_err(|e| self.err("UploadPart", key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build(),
                );
                number += 1;
            }
            self.client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.err("CompleteMultipartUpload", key, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            // Leave no orphaned parts billing the bucket owner.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

/// Feeds a multipart upload part by part, from memory or from a file.
#[async_trait]
trait AsyncPartSource: Send {
    async fn next_part(&mut self, size: usize) -> std::io::Result<Option<Bytes>>;
}

struct MemParts(Bytes);

#[async_trait]
impl AsyncPartSource for MemParts {
    async fn next_part(&mut self, size: usize) -> std::io::Result<Option<Bytes>> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let n = size.min(self.0.len());
        Ok(Some(self.0.split_to(n)))
    }
}

struct FileParts(tokio::fs::File);

#[async_trait]
impl AsyncPartSource for FileParts {
    async fn next_part(&mut self, size: usize) -> std::io::Result<Option<Bytes>> {
        let mut buf = Vec::with_capacity(size);
        while buf.len() < size {
            let n = (&mut self.0)
                .take((size - buf.len()) as u64)
                .read_to_end(&mut buf)
                .await?;
            if n == 0 {
                break;
            }
        }
        Ok(if buf.is_empty() {
            None
        } else {
            Some(Bytes::from(buf))
        })
    }
}

impl S3Store {
    /// GetObject of `key`: its full key and the response (body not read yet).
    async fn get_object(
        &self,
        key: &ObjectKey,
    ) -> Result<(String, aws_sdk_s3::operation::get_object::GetObjectOutput), StoreError> {
        let full = self.full_key(key);
        match self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => Ok((full, out)),
            Err(e) => {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    return Err(StoreError::NotFound(key.clone()));
                }
                Err(self.err("GetObject", &full, e))
            }
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<(), StoreError> {
        let full = self.full_key(key);
        if data.len() >= self.settings.multipart_threshold {
            return self.put_multipart(&full, MemParts(data)).await;
        }
        self.client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(&full)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.err("PutObject", &full, e))?;
        Ok(())
    }

    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = tokio::fs::metadata(path).await.map_err(io)?.len();
        if len as usize >= self.settings.multipart_threshold {
            let f = tokio::fs::File::open(path).await.map_err(io)?;
            return self.put_multipart(&self.full_key(key), FileParts(f)).await;
        }
        let data = tokio::fs::read(path).await.map_err(io)?;
        self.put(key, Bytes::from(data)).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        let (full, out) = self.get_object(key).await?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| self.err("GetObject(body)", &full, e))?;
        Ok(body.into_bytes())
    }

    async fn get_to_file(
        &self,
        key: &ObjectKey,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, StoreError> {
        use tokio::io::AsyncWriteExt;
        let (full, mut out) = self.get_object(key).await?;
        let io = |source| StoreError::Io {
            path: dest.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut written = 0u64;
        while let Some(chunk) = out
            .body
            .try_next()
            .await
            .map_err(|e| self.err("GetObject(body)", &full, e))?
        {
            let room = (max_bytes.saturating_add(1) - written).min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..room]).await.map_err(io)?;
            written += room as u64;
            if written > max_bytes {
                break;
            }
        }
        file.flush().await.map_err(io)?;
        Ok(written)
    }

    async fn exists(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        let full = self.full_key(key);
        match self
            .client
            .head_object()
            .bucket(&self.settings.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(self.err("HeadObject", &full, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, StoreError> {
        let full_prefix = format!("{}{}", self.settings.prefix, prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.settings.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("ListObjectsV2", &full_prefix, e))?;
            for obj in page.contents() {
                let Some(k) = obj.key() else { continue };
                let Some(rel) = k.strip_prefix(&self.settings.prefix) else {
                    continue;
                };
                if let Ok(key) = ObjectKey::new(rel) {
                    out.push(key);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let full = self.full_key(key);
        self.client
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.err("DeleteObject", &full, e))?;
        Ok(())
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.settings.bucket, self.settings.prefix)
    }

    fn key_of_bucket_object(&self, bucket: &str, key: &str) -> Option<ObjectKey> {
        if bucket != self.settings.bucket {
            return None;
        }
        ObjectKey::new(key.strip_prefix(&self.settings.prefix)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::AwsSettings;

    #[tokio::test]
    async fn bucket_objects_map_to_keys_under_the_prefix_only() {
        let aws = AwsSettings {
            region: Some("us-east-1".into()),
            endpoint_url: Some("http://127.0.0.1:9".into()),
        };
        let mut s = S3Settings::new("b");
        s.prefix = "seg/".into();
        let store = S3Store::connect(&aws, s).await;
        assert_eq!(
            store
                .key_of_bucket_object("b", "seg/uploads/x.zip")
                .map(String::from),
            Some("uploads/x.zip".to_string())
        );
        assert_eq!(
            store.key_of_bucket_object("other", "seg/uploads/x.zip"),
            None
        );
        assert_eq!(store.key_of_bucket_object("b", "uploads/x.zip"), None);
        assert_eq!(store.key_of_bucket_object("b", "seg/../x.zip"), None);
    }
}
