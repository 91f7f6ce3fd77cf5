//! The PMS-contract endpoint over real loopback HTTP, driven by hand-written requests so the
//! exact wire form (methods, chunked bodies, headers) is under the test's control.

use std::{net::SocketAddr, path::Path, time::Duration};

use clusterplex_pms_contract::{Config, Kind, ManifestBody, PmsContract, Recording};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const BASE: &str = "/video/:/transcode/session/abc123/6f1c2d3e-0000-4000-8000-000000000001";

/// Sends one raw HTTP/1.1 request and returns (status, body).
async fn raw(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Lavf/59.27.100\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    match body {
        // Chunked, like libavformat's HTTP writer; split in two chunks to exercise reassembly.
        Some(b) => {
            req.push_str("Transfer-Encoding: chunked\r\n\r\n");
            let (a, c) = b.split_at(b.len() / 2);
            for part in [a, c] {
                if !part.is_empty() {
                    req.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
                }
            }
            req.push_str("0\r\n\r\n");
        }
        None => req.push_str("Content-Length: 0\r\n\r\n"),
    }
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A PUT without a body or extra headers, as the transcoder sends progress and metadata.
async fn put(addr: SocketAddr, target: &str) -> (u16, String) {
    raw(addr, "PUT", target, &[], None).await
}

/// A POST without extra headers: a manifest (chunked `body`) or a log line (`None`).
async fn post(addr: SocketAddr, target: &str, body: Option<&str>) -> (u16, String) {
    raw(addr, "POST", target, &[], body).await
}

/// An endpoint that checks manifests against the session directory `dir` on arrival.
async fn start_checking(dir: &Path) -> PmsContract {
    let config = Config::default().with_session_dir(dir);
    PmsContract::start_local(config).await.unwrap()
}

/// PUTs every target in order to a fresh default endpoint, each answered with `status`, and
/// returns what it recorded.
async fn record_puts(targets: &[String], status: u16) -> Recording {
    let pms = PmsContract::start_local(Config::default()).await.unwrap();
    for t in targets {
        assert_eq!(put(pms.addr(), t).await.0, status, "{t}");
    }
    pms.shutdown().await
}

fn mpd(kind: &str, start: u64, segments: usize) -> String {
    let timeline: String = (0..segments)
        .map(|i| format!("<S t=\"{}\" d=\"5000\"/>", i * 5000))
        .collect();
    let dur = if kind == "static" {
        " mediaPresentationDuration=\"PT10.0S\""
    } else {
        ""
    };
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="{kind}"{dur}>
 <Period id="0" start="PT0.0S">
  <AdaptationSet id="0" contentType="video">
   <Representation id="0" mimeType="video/mp4" codecs="avc1" bandwidth="500000" width="320" height="180">
    <SegmentTemplate timescale="1000" initialization="init-stream$RepresentationID$.m4s" media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="{start}">
     <SegmentTimeline>{timeline}</SegmentTimeline>
    </SegmentTemplate>
   </Representation>
  </AdaptationSet>
 </Period>
</MPD>
"#
    )
}

fn touch(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), b"x").unwrap();
}

#[tokio::test]
async fn replies_like_pms_and_records_in_order() {
    let pms = PmsContract::start_local(Config::default()).await.unwrap();
    let a = pms.addr();
    let p = format!("{BASE}/progress");
    for q in [
        "?status=startup",
        "/stream?index=0&id=0&codec=h264&type=video",
        "/streamDetail?index=0&id=0&codec=h264&type=video&width=320",
        "?duration=10.000000",
        "?width=320&height=180",
    ] {
        assert_eq!(put(a, &format!("{p}{q}")).await.0, 204, "{q}");
    }
    let (status, body) = put(
        a,
        &format!("{p}?progress=10.0&size=100&remaining=5&speed=2.0"),
    )
    .await;
    assert_eq!(status, 206);
    assert!(
        body.contains("<MediaContainer") && !body.contains("canThrottle"),
        "{body}"
    );
    pms.set_throttle(true);
    let (status, body) = put(a, &format!("{p}?progress=20.0&size=200&remaining=4")).await;
    assert_eq!(status, 206);
    assert!(body.contains("canThrottle"), "{body}");
    // PMS rejects POST on the progress endpoint.
    let rejected = format!("{p}?progress=30.0&size=1&remaining=1");
    assert_eq!(post(a, &rejected, None).await.0, 404);
    let log = format!("{p}/log?level=0&message=Input%20%2Fx%20failed%2C+retry");
    assert_eq!(post(a, &log, None).await.0, 200);
    assert_eq!(raw(a, "GET", "/library/sections", &[], None).await.0, 404);

    let rec = pms.shutdown().await;
    let kinds: Vec<Kind> = rec.requests.iter().map(|r| r.kind).collect();
    use Kind::*;
    assert_eq!(
        kinds,
        vec![
            Startup,
            Stream,
            StreamDetail,
            Duration,
            Dimensions,
            Progress,
            Progress,
            Rejected,
            Log,
            Rejected
        ]
    );
    assert_eq!(
        rec.requests.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        rec.of(Log)[0].param("message"),
        Some("Input /x failed, retry")
    );
    assert_eq!(rec.of(Log)[0].param("level"), Some("0"));
    assert_eq!(rec.progress_values(), vec![10.0, 20.0]);
    assert!(rec.check_progress_monotonic().is_empty());
    assert_eq!(
        rec.requests[0].user_agent.as_deref(),
        Some("Lavf/59.27.100")
    );
    // The order check flags the two rejected requests and nothing else.
    let order = rec.check_order();
    assert_eq!(order.len(), 2, "{order:?}");
    assert!(
        order.iter().all(|v| v.contains("rejected with 404")),
        "{order:?}"
    );
}

#[tokio::test]
async fn missing_or_wrong_token_is_rejected() {
    let pms = PmsContract::start_local(Config::default().with_token("local-secret"))
        .await
        .unwrap();
    let a = pms.addr();
    let p = format!("{BASE}/progress?duration=3.000000");
    assert_eq!(put(a, &p).await.0, 401);
    assert_eq!(
        raw(a, "PUT", &p, &[("X-Plex-Token", "nope")], None).await.0,
        401
    );
    assert_eq!(
        raw(a, "PUT", &p, &[("X-Plex-Token", "local-secret")], None)
            .await
            .0,
        204
    );
    assert_eq!(
        put(a, &format!("{p}&X-Plex-Token=local-secret")).await.0,
        204
    );
    let rec = pms.shutdown().await;
    assert_eq!(rec.rejected().len(), 2);
    assert_eq!(rec.check_token("local-secret").len(), 2);
    assert_eq!(rec.of(Kind::Duration).len(), 2);
}

#[tokio::test]
async fn manifests_are_checked_against_the_session_directory_on_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let pms = start_checking(dir.path()).await;
    let a = pms.addr();
    let m = format!("{BASE}/manifest?X-Plex-Http-Pipeline=infinite");
    touch(dir.path(), "init-stream0.m4s");
    touch(dir.path(), "chunk-stream0-00005.m4s");
    assert_eq!(post(a, &m, Some(&mpd("dynamic", 5, 1))).await.0, 200);
    // Lists chunk 6 before it exists: PMS would serve a missing file.
    assert_eq!(post(a, &m, Some(&mpd("dynamic", 5, 2))).await.0, 200);
    touch(dir.path(), "chunk-stream0-00006.m4s");
    let rec = pms.recording();
    let v = rec.check_manifests_list_existing_chunks();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("chunk-stream0-00006.m4s"), "{v:?}");
    // After the fact everything exists, which is why the check runs on arrival.
    assert!(rec.check_listed_files_exist_in(dir.path()).is_empty());
    assert!(rec.requests.iter().all(|r| r.chunked));
    assert!(rec.check_start_number(5).is_empty());
    assert_eq!(rec.check_start_number(1).len(), 1);
    // No static MPD yet: the last one is dynamic.
    assert_eq!(rec.check_static_only_last().len(), 1);

    assert_eq!(post(a, &m, Some(&mpd("static", 5, 2))).await.0, 200);
    let rec = pms.shutdown().await;
    assert!(
        rec.check_static_only_last().is_empty(),
        "{:?}",
        rec.check_static_only_last()
    );
    let last = rec.mpds().pop().unwrap().clone();
    assert_eq!(last.mpd_type, "static");
    assert_eq!(
        last.listed_files(),
        vec![
            "init-stream0.m4s",
            "chunk-stream0-00005.m4s",
            "chunk-stream0-00006.m4s"
        ]
    );
}

#[tokio::test]
async fn static_before_the_end_is_flagged() {
    let pms = PmsContract::start_local(Config::default()).await.unwrap();
    let m = format!("{BASE}/manifest");
    post(pms.addr(), &m, Some(&mpd("static", 1, 1))).await;
    post(pms.addr(), &m, Some(&mpd("dynamic", 1, 2))).await;
    let rec = pms.shutdown().await;
    assert_eq!(
        rec.check_static_only_last().len(),
        2,
        "{:?}",
        rec.check_static_only_last()
    );
    // No session directory was configured, so the on-arrival check says it could not check.
    assert_eq!(rec.check_manifests_list_existing_chunks().len(), 2);
}

#[tokio::test]
async fn malformed_mpd_is_rejected() {
    let pms = PmsContract::start_local(Config::default()).await.unwrap();
    let m = format!("{BASE}/manifest");
    for body in [
        "<MPD type=\"dynamic\"><Period></MPD>",
        "<html><body>hi</body></html>",
    ] {
        assert_eq!(post(pms.addr(), &m, Some(body)).await.0, 400, "{body}");
    }
    let rec = pms.shutdown().await;
    assert!(matches!(
        rec.requests[0].manifest,
        Some(ManifestBody::Invalid { .. })
    ));
    assert_eq!(rec.check_manifests_list_existing_chunks().len(), 4);
}

#[tokio::test]
async fn segment_list_csv_rows_are_parsed_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let pms = start_checking(dir.path()).await;
    let m = format!("{BASE}/manifest?stream=subtitles&X-Plex-Http-Pipeline=infinite");
    touch(dir.path(), "media-00040.ts");
    touch(dir.path(), "media-00041.ts");
    let good = "media-00040.ts,195.000000,203.000000,202.990000,203.000000\n\
                media-00041.ts,203.000000,211.000000,210.980000,211.000000\n\
                #media-00042.ts,211.000000,212.500000,-1,212.500000\n";
    assert_eq!(post(pms.addr(), &m, Some(good)).await.0, 200);
    let rec = pms.recording();
    assert!(rec.check_csv_rows(5).is_empty());
    assert!(
        rec.check_manifests_list_existing_chunks().is_empty(),
        "the # row is in progress, not listed"
    );
    assert_eq!(
        rec.check_csv_rows(2).len(),
        1,
        "3 rows exceed a window of 2"
    );
    match &rec.requests[0].manifest {
        Some(ManifestBody::Csv { rows }) => {
            assert_eq!(rows.len(), 3);
            assert!(rows[2].unfinished);
            assert_eq!(rows[2].end_audio, Some(-1.0));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        rec.requests[0].manifest_key(),
        format!("{BASE}/manifest?stream=subtitles")
    );
    // Mixed column counts and a listed file that is missing.
    let mixed = "media-00043.ts,1,2\nmedia-00044.ts,2,3,3,3\n";
    assert_eq!(post(pms.addr(), &m, Some(mixed)).await.0, 400);
    let missing = "media-00099.ts,1.0,2.0\n";
    assert_eq!(post(pms.addr(), &m, Some(missing)).await.0, 200);
    let rec = pms.shutdown().await;
    assert_eq!(rec.check_csv_rows(5).len(), 1);
    let v = rec.check_manifests_list_existing_chunks();
    assert!(v.iter().any(|s| s.contains("media-00099.ts")), "{v:?}");
}

#[tokio::test]
async fn progress_regressions_are_flagged() {
    let targets = [
        "progress=-1&size=0&remaining=-1",
        "progress=50.0&size=900&remaining=2",
        "progress=40.0&size=800&remaining=2",
    ]
    .map(|q| format!("{BASE}/progress?{q}"));
    let rec = record_puts(&targets, 206).await;
    let v = rec.check_progress_monotonic();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(rec.check_order().iter().any(|s| s == "no duration PUT"));
}

#[tokio::test]
async fn recording_is_served_as_json() {
    let pms = PmsContract::start_local(Config::default()).await.unwrap();
    put(pms.addr(), &format!("{BASE}/progress?duration=1.500000")).await;
    let (status, body) = raw(pms.addr(), "GET", "/_recording", &[], None).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["kind"], "duration");
    assert_eq!(v[0]["params"][0][1], "1.500000");
    // The dump itself is not recorded.
    assert_eq!(pms.recording().requests.len(), 1);
}

#[tokio::test]
async fn stream_callbacks_are_checked_for_order_and_content() {
    let p = format!("{BASE}/progress");
    let video = "index=0&id=1&codec=hevc&type=video";
    let audio = "index=1&id=2&codec=aac&type=audio";

    // The order Plex's transcoder uses: startup, every stream, every detail, then duration.
    let in_order = [
        format!("{p}?status=startup"),
        format!("{p}/stream?{video}"),
        format!("{p}/stream?{audio}"),
        format!("{p}/streamDetail?{video}&width=320&height=180&level=30"),
        format!("{p}/streamDetail?{audio}&channels=2&sampleRate=48000"),
        format!("{p}?duration=4.000000"),
    ];
    let rec = record_puts(&in_order, 204).await;
    assert_eq!(rec.of(Kind::Stream).len(), 2);
    assert_eq!(
        rec.of(Kind::StreamDetail)[0].param("width"),
        Some("320"),
        "details are recorded"
    );
    assert_eq!(rec.check_order(), Vec::<String>::new());
    assert_eq!(rec.check_streams(&["video", "audio"]), Vec::<String>::new());
    // Asking for another set of streams is a violation for both PUT kinds.
    assert_eq!(rec.check_streams(&["video"]).len(), 2);

    // Out of order: a detail before its stream, a stream after the duration; a detail without
    // the keys its type needs; a repeated index.
    let out_of_order = [
        format!("{p}?status=startup"),
        format!("{p}/streamDetail?{video}"),
        format!("{p}/stream?{video}"),
        format!("{p}?duration=4.000000"),
        format!("{p}/stream?{video}"),
    ];
    let rec = record_puts(&out_of_order, 204).await;
    let order = rec.check_order();
    assert_eq!(order.len(), 2, "{order:?}");
    assert!(
        order
            .iter()
            .any(|v| v.contains("without an earlier stream")),
        "{order:?}"
    );
    assert!(
        order.iter().any(|v| v.contains("Stream #4 after duration")),
        "{order:?}"
    );
    let streams = rec.check_streams(&["video"]);
    assert!(
        streams.iter().any(|v| v.contains("without width")),
        "{streams:?}"
    );
    assert!(
        streams.iter().any(|v| v.contains("repeats index")),
        "{streams:?}"
    );
}
