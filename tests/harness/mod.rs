//! What the integration tests share, one concept a file: Apache Kafka clusters (`apache_kafka`), the other brokers
//! and Kafka configs (`kafka`), reading a topic back and counting what is in it (`topic`), OTLP requests (`otlp`),
//! each role running in this process (`roles`), the real binary (`binary`) and its roles as processes that can be
//! killed and restarted (`processes`), waiting with a deadline (`wait`), the Python SDK (`python`), HTTP exactly as
//! the server said it (`http`), backends that can be told to fail (`backends`), a TCP proxy that can be told to delay, stall or reset (`proxy`), real Jaeger v2 (`jaeger`) and the real Collector (`collector`), and free ports and directories
//! (`local`).

pub mod apache_kafka;
pub mod backends;
pub mod binary;
pub mod certs;
pub mod collector;
pub mod http;
pub mod jaeger;
pub mod kafka;
pub mod lag;
pub mod local;
pub mod otlp;
pub mod processes;
pub mod proxy;
pub mod python;
pub mod roles;
pub mod sampling;
pub mod topic;
pub mod wait;

pub use apache_kafka::brokers as apache_kafka;
pub use kafka::{kafka_config, mock_cluster, mock_kafka};
pub use local::{free_port, temp_dir};
pub use otlp::trace_request;
pub use python::{python, python_script};
pub use roles::{fast_retry, ingest_config, start_exporter, start_gateway, start_sampler, RunningGateway};
pub use topic::{read_topic, Record};
pub use wait::eventually;
