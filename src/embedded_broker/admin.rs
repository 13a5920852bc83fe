//! The few admin requests the embedded broker's wrapper makes of its own broker — list the topics, read and set a
//! topic's `retention.ms` — spoken over the broker's listener like any client's, encoded by Tansu's protocol
//! crate. rust-rdkafka offers only the older AlterConfigs, which Tansu 0.6 does not serve; it serves
//! IncrementalAlterConfigs.

use std::collections::HashMap;
use std::net::SocketAddr;

use tansu_sans_io::describe_configs_request::DescribeConfigsResource;
use tansu_sans_io::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use tansu_sans_io::{
    ApiKey, Body, ConfigResource, DescribeConfigsRequest, DescribeConfigsResponse, Frame, Header,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, MetadataRequest, MetadataResponse, OpType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection to the broker for admin requests, one at a time.
pub(super) struct Admin {
    stream: TcpStream,
    correlation_id: i32,
}

pub(super) const RETENTION_MS: &str = "retention.ms";

impl Admin {
    pub(super) async fn connect(addr: SocketAddr) -> Result<Admin, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        Ok(Admin { stream, correlation_id: 0 })
    }

    async fn call<Request, Response>(&mut self, api_version: i16, request: Request) -> Result<Response, String>
    where
        Request: ApiKey + Into<Body>,
        Response: TryFrom<Body>,
    {
        self.correlation_id += 1;
        let header = Header::Request {
            api_key: Request::KEY,
            api_version,
            correlation_id: self.correlation_id,
            client_id: Some("tailgate-embedded-broker".to_owned()),
        };
        let frame = Frame::request(header, request.into()).map_err(|e| format!("encoding a request: {e:?}"))?;
        self.stream.write_all(&frame).await.map_err(|e| format!("sending a request: {e}"))?;
        let size = self.stream.read_i32().await.map_err(|e| format!("reading a response: {e}"))?;
        let mut bytes = vec![0; 4 + usize::try_from(size).map_err(|_| format!("a response of {size} bytes"))?];
        bytes[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.read_exact(&mut bytes[4..]).await.map_err(|e| format!("reading a response: {e}"))?;
        let frame = Frame::response_from_bytes(&bytes[..], Request::KEY, api_version)
            .map_err(|e| format!("decoding a response: {e:?}"))?;
        Response::try_from(frame.body).map_err(|_| "a response of another kind".to_owned())
    }

    /// Every topic's name.
    pub(super) async fn topics(&mut self) -> Result<Vec<String>, String> {
        // Version 1: the first in which no topics means every topic, and without the fields of later ones.
        let response: MetadataResponse = self.call(1, MetadataRequest::default().topics(None)).await?;
        Ok(response.topics.unwrap_or_default().into_iter().filter_map(|topic| topic.name).collect())
    }

    /// A topic's configuration: what it was created with or set to.
    pub(super) async fn topic_config(&mut self, topic: &str) -> Result<HashMap<String, String>, String> {
        let resource = DescribeConfigsResource::default()
            .resource_type(ConfigResource::Topic.into())
            .resource_name(topic.to_owned())
            .configuration_keys(None);
        // Version 1: Tansu 0.6 answers version 0 without its `is_sensitive` field.
        let request = DescribeConfigsRequest::default().resources(Some(vec![resource])).include_synonyms(Some(false));
        let response: DescribeConfigsResponse = self.call(1, request).await?;
        let configs = response.results.unwrap_or_default().into_iter().flat_map(|r| r.configs.unwrap_or_default());
        Ok(configs.filter_map(|config| Some((config.name, config.value?))).collect())
    }

    /// Sets a topic's `retention.ms`.
    pub(super) async fn set_retention_ms(&mut self, topic: &str, retention_ms: u64) -> Result<(), String> {
        let config = AlterableConfig::default()
            .name(RETENTION_MS.to_owned())
            .config_operation(OpType::Set.into())
            .value(Some(retention_ms.to_string()));
        let resource = AlterConfigsResource::default()
            .resource_type(ConfigResource::Topic.into())
            .resource_name(topic.to_owned())
            .configs(Some(vec![config]));
        let request = IncrementalAlterConfigsRequest::default().resources(Some(vec![resource])).validate_only(false);
        let response: IncrementalAlterConfigsResponse = self.call(0, request).await?;
        match response.responses.unwrap_or_default().first() {
            Some(answer) if answer.error_code == 0 => Ok(()),
            Some(answer) => Err(format!("setting {topic}'s {RETENTION_MS}: error {}", answer.error_code)),
            None => Err(format!("setting {topic}'s {RETENTION_MS}: no answer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_and_sets_a_topics_retention() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let broker = tokio::task::spawn_blocking(move || {
            super::super::EmbeddedBroker::start(addr, super::super::Storage::Memory)
        });
        broker.await.unwrap().unwrap();
        let admin: AdminClient<DefaultClientContext> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", addr.to_string()).create().unwrap();
        let topic = NewTopic::new("spans", 2, TopicReplication::Fixed(1)).set("retention.ms", "60000");
        admin.create_topics([&topic], &AdminOptions::new()).await.unwrap();

        let mut ours = Admin::connect(addr).await.unwrap();
        assert!(ours.topics().await.unwrap().contains(&"spans".to_owned()));
        let retention = |config: HashMap<String, String>| config.get(RETENTION_MS).cloned();
        assert_eq!(retention(ours.topic_config("spans").await.unwrap()).as_deref(), Some("60000"));
        ours.set_retention_ms("spans", 5_000).await.unwrap();
        assert_eq!(retention(ours.topic_config("spans").await.unwrap()).as_deref(), Some("5000"));
    }
}
