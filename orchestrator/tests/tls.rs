//! gRPC over TLS with real processes: a CA and server certificate made at test time, a worker
//! and a job over `https://`, and plaintext or wrongly-trusting clients refused.

mod common;

use std::{path::Path, time::Duration};

use clusterplex_core::rpc::{self, Event, JobServiceClient, pb};
use common::*;

/// Writes `ca.pem`, `cert.pem`, `key.pem` (server certificate for localhost and 127.0.0.1,
/// signed by the CA) into `dir`; returns the CA path.
fn make_pki(dir: &Path, prefix: &str) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{prefix} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join(format!("{prefix}ca.pem")), ca_cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{prefix}cert.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{prefix}key.pem")), key.serialize_pem()).unwrap();
}

async fn tls_client(
    url: &str,
    ca: &Path,
) -> Result<JobServiceClient<rpc::AuthChannel>, tonic::Status> {
    let ch = rpc::connect_channel_tls(url, Duration::from_secs(5), Some(ca)).await?;
    Ok(JobServiceClient::with_interceptor(
        ch,
        rpc::TokenInterceptor::new(Some(TOKEN))?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_job_over_tls_and_plaintext_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let pki = media.join("pki");
    std::fs::create_dir(&pki).unwrap();
    make_pki(&pki, "");
    make_pki(&pki, "other-");
    let clip = make_clip(&media, "clip.mp4", 1);
    let (port, http) = (free_port(), free_port());
    let cert = pki.join("cert.pem");
    let key = pki.join("key.pem");
    let ca = pki.join("ca.pem");
    let _orch = orchestrator(
        port,
        http,
        &[
            ("CLUSTERPLEX_TLS_CERT", cert.to_str().unwrap()),
            ("CLUSTERPLEX_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    let url = format!("https://localhost:{port}");
    let _w = worker_with(
        port,
        "t1",
        &media,
        &[
            ("ORCHESTRATOR_URL", url.as_str()),
            ("CLUSTERPLEX_TLS_CA", ca.to_str().unwrap()),
        ],
    );
    // The orchestrator may still be starting: retry the first TLS connection.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        match tls_client(&url, &ca).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_workers(&mut c, 1).await;
    let req =
        rpc::submit_request(&transcode_job(&clip, &media, "tls.mp4", false), "p", "h").unwrap();
    let mut ev = c.submit(req).await.unwrap().into_inner();
    let end = until(&mut ev, 60, rpc::is_terminal).await;
    assert!(
        matches!(end, Event::Finished(ref f) if f.exit_status == 0),
        "{end:?}"
    );
    assert_eq!(frames(&media.join("tls.mp4")), 25);

    // Plaintext to the TLS port: refused (at connect or at the first call).
    let plain = async {
        let mut c = rpc::job_client(
            &format!("http://127.0.0.1:{port}"),
            Some(TOKEN),
            Duration::from_secs(3),
        )
        .await?;
        c.list_workers(pb::ListWorkersRequest {}).await
    };
    let r = tokio::time::timeout(Duration::from_secs(10), plain)
        .await
        .expect("plaintext call hung");
    assert!(r.is_err(), "a plaintext client was served");
    // A client that trusts another CA refuses the orchestrator's certificate.
    let other = pki.join("other-ca.pem");
    let r = async {
        tls_client(&url, &other)
            .await?
            .list_workers(pb::ListWorkersRequest {})
            .await
    }
    .await;
    assert!(
        r.is_err(),
        "a certificate from an untrusted CA was accepted"
    );
    // An https URL without a CA is a clear configuration error.
    let e = rpc::connect_channel_tls(&url, Duration::from_secs(1), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("CLUSTERPLEX_TLS_CA"), "{e:?}");
    // The token check still applies over TLS.
    let ch = rpc::connect_channel_tls(&url, Duration::from_secs(5), Some(&ca))
        .await
        .unwrap();
    let mut bad =
        JobServiceClient::with_interceptor(ch, rpc::TokenInterceptor::new(Some("wrong")).unwrap());
    let e = bad
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}
