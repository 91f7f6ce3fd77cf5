//! The gRPC protocol (`proto/clusterplex.proto`): generated types and services, conversions to
//! and from the domain types, the shared-token check, and a small client helper.
//!
//! Read the comment at the top of the proto file for the message flow.

use std::{path::Path, str::FromStr, time::Duration};

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, ClientTlsConfig, Endpoint},
};

use crate::{
    capability::{Capabilities, CapabilityNeeds},
    events::{InputStream, JobEvent, JobSummary, LogLevel, Progress, RunError, SegmentInfo},
    job::Job,
};

/// Generated protobuf messages and service stubs.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("clusterplex.v1");
}

pub use pb::{
    job_event_message::Event, job_service_client::JobServiceClient,
    job_service_server::JobServiceServer, worker_service_client::WorkerServiceClient,
    worker_service_server::WorkerServiceServer,
};

/// The prost codec with small per-call buffers. tonic's default starts every call's encode and
/// decode buffers at 8 KiB; the orchestrator holds one long-lived call per worker and one per
/// running job, whose messages are a few hundred bytes, so at 1000 workers the defaults alone
/// cost several MiB of resident memory. Buffers still grow, in steps of this size, for larger
/// messages (a submitted `Job`).
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(std::marker::PhantomData<(T, U)>);

/// Initial size and growth step of [`LeanCodec`]'s buffers.
const LEAN_CODEC_BUFFER: usize = 1024;

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<T, U>::raw_encoder(Self::settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<T, U>::raw_decoder(Self::settings())
    }
}

impl<T, U> LeanCodec<T, U> {
    fn settings() -> tonic::codec::BufferSettings {
        // Yield threshold as tonic's default: it bounds batching of streamed messages, not memory.
        tonic::codec::BufferSettings::new(LEAN_CODEC_BUFFER, 32 * 1024)
    }
}

/// Version of the wire protocol. Bumped on any incompatible change; 0 means "not sent".
/// Workers with another version are refused at register with `FAILED_PRECONDITION`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Metadata key carrying the shared token (`Bearer <token>`).
pub const AUTH_HEADER: &str = "authorization";

/// The default orchestrator gRPC port (ClusterPlex's `LISTENING_PORT` default).
pub const DEFAULT_ORCHESTRATOR_PORT: u16 = 3500;

// ------------------------------------------------------------------------------------- auth

/// Compares two byte strings in time that depends only on their lengths, so a client cannot
/// learn the token one byte at a time.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// Server side: checks `authorization: Bearer <token>` when `expected` is set.
pub fn check_token(
    expected: Option<&str>,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<(), Status> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let got = metadata
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Status::unauthenticated("missing `authorization: Bearer <token>` (CLUSTERPLEX_TOKEN)")
        })?;
    if constant_time_eq(got.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Status::unauthenticated("wrong token (CLUSTERPLEX_TOKEN)"))
    }
}

/// Client side: adds the bearer token to every call when one is configured.
#[derive(Clone, Default)]
pub struct TokenInterceptor {
    header: Option<MetadataValue<Ascii>>,
}

impl TokenInterceptor {
    /// `None` or an empty token sends nothing.
    pub fn new(token: Option<&str>) -> Result<Self, Status> {
        let header = match token.filter(|t| !t.is_empty()) {
            Some(t) => Some(
                MetadataValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| Status::invalid_argument("the token must be printable ASCII"))?,
            ),
            None => None,
        };
        Ok(Self { header })
    }
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert(AUTH_HEADER, h.clone());
        }
        Ok(req)
    }
}

/// A plain channel (what [`connect_channel`] returns), for callers without their own tonic.
pub use tonic::transport::Channel;

/// A channel with the token attached.
pub type AuthChannel = InterceptedService<Channel, TokenInterceptor>;

/// Environment variable naming the PEM CA certificate that `https://` orchestrator URLs are
/// verified against (clients: worker agents, shims).
pub const TLS_CA_ENV: &str = "CLUSTERPLEX_TLS_CA";

/// Opens a channel to `url`, failing after `connect_timeout`. `http://host:3500` is plaintext;
/// `https://host:3500` is TLS, verified against the CA in `CLUSTERPLEX_TLS_CA`.
pub async fn connect_channel(url: &str, connect_timeout: Duration) -> Result<Channel, Status> {
    let ca = std::env::var_os(TLS_CA_ENV).filter(|v| !v.is_empty());
    connect_channel_tls(url, connect_timeout, ca.as_deref().map(Path::new)).await
}

/// [`connect_channel`] with the CA given explicitly (`None`: the URL must be `http://`).
pub async fn connect_channel_tls(
    url: &str,
    connect_timeout: Duration,
    tls_ca: Option<&Path>,
) -> Result<Channel, Status> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| Status::invalid_argument(format!("bad orchestrator url `{url}`: {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let Some(ca) = tls_ca else {
            return Err(Status::invalid_argument(format!(
                "`{url}` is TLS: set {TLS_CA_ENV} (or --tls-ca) to the CA certificate (PEM) that signed the orchestrator's"
            )));
        };
        let pem = std::fs::read(ca).map_err(|e| {
            Status::invalid_argument(format!("{TLS_CA_ENV} `{}`: {e}", ca.display()))
        })?;
        let host = endpoint.uri().host().unwrap_or_default().to_string();
        endpoint = endpoint
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(pem))
                    .domain_name(host),
            )
            .map_err(|e| Status::invalid_argument(format!("TLS setup for `{url}`: {e}")))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot reach the orchestrator at {url}: {e}")))
}

/// A job-service client for shims and tools: connects to `url` and sends `token` on every call.
pub async fn job_client(
    url: &str,
    token: Option<&str>,
    connect_timeout: Duration,
) -> Result<JobServiceClient<AuthChannel>, Status> {
    let channel = connect_channel(url, connect_timeout).await?;
    Ok(JobServiceClient::with_interceptor(
        channel,
        TokenInterceptor::new(token)?,
    ))
}

/// [`job_client`] with the TLS CA given explicitly (a `--tls-ca` flag) instead of read from
/// `CLUSTERPLEX_TLS_CA`.
pub async fn job_client_tls(
    url: &str,
    token: Option<&str>,
    connect_timeout: Duration,
    tls_ca: Option<&Path>,
) -> Result<JobServiceClient<AuthChannel>, Status> {
    let channel = connect_channel_tls(url, connect_timeout, tls_ca).await?;
    Ok(JobServiceClient::with_interceptor(
        channel,
        TokenInterceptor::new(token)?,
    ))
}

/// Builds the request a shim sends to run `job`.
pub fn submit_request(
    job: &Job,
    poster_id: &str,
    poster_host: &str,
) -> Result<pb::SubmitJobRequest, Status> {
    Ok(pb::SubmitJobRequest {
        protocol_version: PROTOCOL_VERSION,
        job_json: encode_json(job)?,
        needs_json: Vec::new(),
        poster_id: poster_id.to_string(),
        poster_host: poster_host.to_string(),
        job_id: String::new(),
    })
}

// -------------------------------------------------------------------------------- JSON

/// Serialises a domain value for a `bytes` field.
pub fn encode_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(v).map_err(|e| Status::internal(format!("cannot encode JSON: {e}")))
}

/// Parses the `Job` carried in `job_json`.
pub fn decode_job(bytes: &[u8]) -> Result<Job, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("job_json is not a valid Job: {e}")))
}

/// Parses optional `needs_json` (empty = `None`).
pub fn decode_needs(bytes: &[u8]) -> Result<Option<CapabilityNeeds>, Status> {
    if bytes.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(bytes).map(Some).map_err(|e| {
        Status::invalid_argument(format!("needs_json is not valid CapabilityNeeds: {e}"))
    })
}

// ------------------------------------------------------------------------- capabilities

impl From<&Capabilities> for pb::Capabilities {
    fn from(c: &Capabilities) -> Self {
        let v = |s: &std::collections::BTreeSet<String>| s.iter().cloned().collect();
        Self {
            decoders: v(&c.decoders),
            encoders: v(&c.encoders),
            filters: v(&c.filters),
            hwaccels: v(&c.hwaccels),
            formats: v(&c.formats),
            ten_bit: c.ten_bit,
            tonemap: v(&c.tonemap),
            arch: c.arch.clone(),
        }
    }
}

impl From<pb::Capabilities> for Capabilities {
    fn from(c: pb::Capabilities) -> Self {
        Self {
            decoders: c.decoders.into_iter().collect(),
            encoders: c.encoders.into_iter().collect(),
            filters: c.filters.into_iter().collect(),
            hwaccels: c.hwaccels.into_iter().collect(),
            formats: c.formats.into_iter().collect(),
            ten_bit: c.ten_bit,
            tonemap: c.tonemap.into_iter().collect(),
            arch: c.arch,
        }
    }
}

// ------------------------------------------------------------------------------- events

impl From<&Progress> for pb::ProgressEvent {
    fn from(p: &Progress) -> Self {
        Self {
            frames: p.frames,
            fps: p.fps,
            out_time: p.out_time,
            speed: p.speed,
            bytes: p.bytes,
            duration: p.duration,
        }
    }
}

impl From<&pb::ProgressEvent> for Progress {
    fn from(p: &pb::ProgressEvent) -> Self {
        Self {
            frames: p.frames,
            fps: p.fps,
            out_time: p.out_time,
            speed: p.speed,
            bytes: p.bytes,
            duration: p.duration,
        }
    }
}

fn level_from_u32(l: u32) -> LogLevel {
    match l {
        0 => LogLevel::Error,
        1 => LogLevel::Warning,
        2 => LogLevel::Info,
        3 => LogLevel::Verbose,
        _ => LogLevel::Debug,
    }
}

/// A running job's event as it goes on the wire.
pub fn event_to_pb(ev: &JobEvent) -> Event {
    match ev {
        JobEvent::Started {
            duration,
            video_size,
            input_streams,
        } => Event::Started(pb::Started {
            duration: *duration,
            video_width: video_size.map(|s| s.0),
            video_height: video_size.map(|s| s.1),
            input_streams: input_streams
                .iter()
                .map(|s| pb::InputStream {
                    input: u32::try_from(s.input).unwrap_or(u32::MAX),
                    index: u32::try_from(s.index).unwrap_or(u32::MAX),
                    id: s.id,
                    kind: s.kind.clone(),
                    codec: s.codec.clone(),
                    details: s
                        .details
                        .iter()
                        .map(|(key, value)| pb::Detail {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }),
        JobEvent::Progress(p) => Event::Progress(p.into()),
        JobEvent::SegmentWritten(s) => Event::Segment(pb::SegmentWritten {
            output: u32::try_from(s.output).unwrap_or(u32::MAX),
            number: s.number,
            paths: s
                .paths
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
            start: s.start,
            end: s.end,
        }),
        JobEvent::Manifest {
            output,
            target,
            content_type,
            body,
            last,
        } => Event::Manifest(pb::Manifest {
            output: u32::try_from(*output).unwrap_or(u32::MAX),
            target: target.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
            last: *last,
        }),
        JobEvent::Log { level, message } => Event::Log(pb::LogLine {
            level: *level as u32,
            message: message.clone(),
        }),
    }
}

/// The domain event for a non-terminal wire event (`None` for queued/accepted/terminal ones).
pub fn event_from_pb(ev: &Event) -> Option<JobEvent> {
    Some(match ev {
        Event::Started(s) => JobEvent::Started {
            duration: s.duration,
            video_size: s.video_width.zip(s.video_height),
            input_streams: s
                .input_streams
                .iter()
                .map(|i| InputStream {
                    input: i.input as usize,
                    index: i.index as usize,
                    id: i.id,
                    kind: i.kind.clone(),
                    codec: i.codec.clone(),
                    details: i
                        .details
                        .iter()
                        .map(|d| (d.key.clone(), d.value.clone()))
                        .collect(),
                })
                .collect(),
        },
        Event::Progress(p) => JobEvent::Progress(p.into()),
        Event::Segment(s) => JobEvent::SegmentWritten(SegmentInfo {
            output: s.output as usize,
            number: s.number,
            paths: s.paths.iter().map(Into::into).collect(),
            start: s.start,
            end: s.end,
        }),
        Event::Manifest(m) => JobEvent::Manifest {
            output: m.output as usize,
            target: m.target.clone(),
            content_type: m.content_type.clone(),
            body: m.body.clone(),
            last: m.last,
        },
        Event::Log(l) => JobEvent::Log {
            level: level_from_u32(l.level),
            message: l.message.clone(),
        },
        _ => return None,
    })
}

/// True for `finished`, `failed` and `cancelled`: nothing follows them.
pub fn is_terminal(ev: &Event) -> bool {
    matches!(
        ev,
        Event::Finished(_) | Event::Failed(_) | Event::Cancelled(_)
    )
}

/// The terminal event for a runner's result.
pub fn outcome_to_pb(result: &Result<JobSummary, RunError>) -> Event {
    match result {
        Ok(s) => Event::Finished(pb::Finished {
            exit_status: 0,
            elapsed: s.elapsed,
            frames: s.progress.frames,
            segments: s.segments.clone(),
        }),
        Err(e) if e.cancelled => Event::Cancelled(pb::Cancelled {
            reason: e.message.clone(),
        }),
        Err(e) => Event::Failed(pb::Failed {
            reason: e.to_string(),
            retryable: false,
            code: pb::FailureCode::JobError as i32,
            stage: e.stage.clone(),
            exit_status: 1,
            ..Default::default()
        }),
    }
}

/// A `failed` event with a code.
pub fn failed(code: pb::FailureCode, reason: impl Into<String>, retryable: bool) -> Event {
    Event::Failed(pb::Failed {
        reason: reason.into(),
        retryable,
        code: code as i32,
        stage: String::new(),
        exit_status: 1,
        ..Default::default()
    })
}

/// Wraps an event for job `job_id`.
pub fn job_event(job_id: &str, event: Event) -> pb::JobEventMessage {
    pb::JobEventMessage {
        job_id: job_id.to_string(),
        event: Some(event),
    }
}

/// Parses a `Register.wake_mac` (six hex octets separated by `:` or `-`, any case). None for
/// anything else, and for the all-zero and broadcast addresses, which no network card has (the
/// loopback interface reports all zeros).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let s = s.trim();
    let sep = if s.contains('-') { '-' } else { ':' };
    let mut mac = [0u8; 6];
    let mut parts = s.split(sep);
    for octet in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *octet = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() || mac == [0; 6] || mac == [0xff; 6] {
        return None;
    }
    Some(mac)
}

/// The wire form of a MAC address: lower-case `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        let m = [0x00, 0x1b, 0x21, 0xaa, 0xBC, 0x0f];
        assert_eq!(parse_mac("00:1b:21:aa:bc:0f"), Some(m));
        assert_eq!(parse_mac(" 00-1B-21-AA-BC-0F\n"), Some(m));
        assert_eq!(format_mac(&m), "00:1b:21:aa:bc:0f");
        for bad in [
            "",
            "00:1b:21:aa:bc",
            "00:1b:21:aa:bc:0f:11",
            "00:1b:21:aa:bc:0g",
            "001b:21:aa:bc:0f",
            "0:1b:21:aa:bc:0f0",
            "00:00:00:00:00:00",
            "ff:ff:ff:ff:ff:ff",
            "00:1b-21:aa:bc:0f",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn constant_time_eq_matches_eq() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn token_check() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert!(check_token(None, &md).is_ok());
        assert_eq!(
            check_token(Some("t"), &md).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        md.insert(AUTH_HEADER, "Bearer nope".parse().unwrap());
        assert_eq!(
            check_token(Some("t"), &md).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        md.insert(AUTH_HEADER, "Bearer t".parse().unwrap());
        assert!(check_token(Some("t"), &md).is_ok());
    }

    #[test]
    fn events_round_trip() {
        let evs = vec![
            JobEvent::Started {
                duration: Some(2.0),
                video_size: Some((320, 180)),
                input_streams: vec![InputStream {
                    input: 0,
                    index: 1,
                    id: 2,
                    kind: "audio".into(),
                    codec: "aac".into(),
                    details: vec![
                        ("channels".into(), "6".into()),
                        ("language".into(), "eng".into()),
                    ],
                }],
            },
            JobEvent::Progress(Progress {
                frames: 3,
                fps: 1.5,
                out_time: 0.1,
                speed: 2.0,
                bytes: 9,
                duration: None,
            }),
            JobEvent::SegmentWritten(SegmentInfo {
                output: 0,
                number: 4,
                paths: vec!["a/b.m4s".into()],
                start: 1.0,
                end: 2.0,
            }),
            JobEvent::Manifest {
                output: 1,
                target: "x.mpd".into(),
                content_type: "application/dash+xml".into(),
                body: b"<MPD/>".to_vec(),
                last: true,
            },
            JobEvent::Log {
                level: LogLevel::Warning,
                message: "hm".into(),
            },
        ];
        for ev in evs {
            assert_eq!(event_from_pb(&event_to_pb(&ev)), Some(ev));
        }
    }

    #[test]
    fn capabilities_round_trip() {
        let caps = Capabilities {
            decoders: ["h264".to_string()].into(),
            tonemap: ["cpu".to_string()].into(),
            ten_bit: true,
            arch: "x86_64".into(),
            ..Default::default()
        };
        assert_eq!(Capabilities::from(pb::Capabilities::from(&caps)), caps);
    }

    #[test]
    fn bad_job_json_is_invalid_argument() {
        assert_eq!(
            decode_job(b"{not json").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(decode_needs(b"").unwrap().is_none());
    }
}
