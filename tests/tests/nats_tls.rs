//! NATS over TLS with client certificates: the farm runs end to end over `tls://` with the CA and
//! client certificate from `FREEAGENT_NATS_TLS_*`; plain and certificate-less clients are refused.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::nats::{self, Identity, NatsSettings};
use freeagent_tests::freeagent_shared::testing::TestNats;
use freeagent_tests::{Farm, FarmOpts, project};
use std::path::Path;
use std::time::Duration;

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.pem());
        for (name, san) in [("server", "127.0.0.1"), ("client", "freeagent-client")] {
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(vec![san.to_owned()]).unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn server_block(&self) -> String {
        format!(
            "\ntls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}\n",
            self.path("server.pem"),
            self.path("server-key.pem"),
            self.path("ca.pem")
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_runs_over_mutual_tls_and_plain_clients_are_refused() {
    let pki = Pki::new();
    let nats = TestNats::start_with(1, Some(pki.server_block())).await;
    assert!(nats.url.starts_with("tls://"));
    let tls_env = vec![
        ("FREEAGENT_NATS_TLS_CA".to_owned(), pki.path("ca.pem")),
        ("FREEAGENT_NATS_TLS_CERT".to_owned(), pki.path("client.pem")),
        (
            "FREEAGENT_NATS_TLS_KEY".to_owned(),
            pki.path("client-key.pem"),
        ),
    ];
    let farm = Farm::start(FarmOpts {
        workers: 1,
        nats: Some((nats.clone(), 0)),
        extra_env: tls_env,
        ..Default::default()
    })
    .await;
    let dir = project("echo over tls > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");

    // The same credentials without TLS, or TLS without a client certificate: refused.
    let creds = &nats.farms[0].scheduler_creds;
    let plain = NatsSettings {
        creds: Some(creds.clone()),
        ..NatsSettings::url(nats.url.replace("tls://", "nats://"))
    };
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        nats::connect(&plain, "plain", Identity::Settings, None),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a plain connection was accepted"
    );
    let no_client_cert = NatsSettings {
        creds: Some(creds.clone()),
        tls_ca: Some(Path::new(&pki.path("ca.pem")).to_owned()),
        ..NatsSettings::url(nats.url.clone())
    };
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        nats::connect(&no_client_cert, "no-cert", Identity::Settings, None),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a client without a certificate was accepted"
    );
    let with_cert = NatsSettings {
        tls_cert: Some(Path::new(&pki.path("client.pem")).to_owned()),
        tls_key: Some(Path::new(&pki.path("client-key.pem")).to_owned()),
        ..no_client_cert
    };
    assert!(
        nats::connect(&with_cert, "with-cert", Identity::Settings, None)
            .await
            .is_ok()
    );
}
