//! [`LogSource`] on S3 (the adapter: SDK types stop here). Needs only
//! `s3:ListBucket` on the bucket and `s3:GetObject` on the trail's prefix.

use aws_config::SdkConfig;

use super::reader::{AttributionError, AttributionResult, LogSource, LIST_PAGE};
use crate::aws::{classify, ErrorKind};

#[derive(Clone, Debug)]
pub struct S3Logs {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Logs {
    /// With `AWS_ENDPOINT_URL` set (an emulator), path-style addressing:
    /// `<bucket>.localhost` does not resolve.
    pub fn new(config: &SdkConfig, bucket: &str) -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(config.endpoint_url().is_some())
            .build();
        S3Logs {
            client: aws_sdk_s3::Client::from_conf(s3),
            bucket: bucket.to_string(),
        }
    }
}

fn error(c: crate::aws::Classified, what: String) -> AttributionError {
    match c.kind {
        ErrorKind::Throttled | ErrorKind::Transient => {
            AttributionError::Transient(format!("{what}: {}", c.message))
        }
        _ => AttributionError::Other(format!(
            "{what}: {} (the daemon needs s3:ListBucket on the trail's bucket and s3:GetObject on its prefix)",
            c.message
        )),
    }
}

impl LogSource for S3Logs {
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> AttributionResult<Vec<String>> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_string))
            .max_keys(LIST_PAGE as i32)
            .send()
            .await
            .map_err(|e| {
                error(
                    classify(&e),
                    format!("listing s3://{}/{prefix}", self.bucket),
                )
            })?;
        Ok(out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect())
    }

    async fn get(&self, key: &str) -> AttributionResult<Vec<u8>> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| error(classify(&e), format!("reading s3://{}/{key}", self.bucket)))?;
        let body = out.body.collect().await.map_err(|e| {
            AttributionError::Transient(format!("reading s3://{}/{key}: {e}", self.bucket))
        })?;
        Ok(body.into_bytes().to_vec())
    }
}
