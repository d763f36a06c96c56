//! What the control plane's integration tests share: a configuration and serving a control plane
//! on 127.0.0.1.

#![allow(dead_code)] // each test binary uses a different part

use gatehouse_control::{ControlConfig, ControlPlane};

pub fn config() -> ControlConfig {
    ControlConfig {
        gateway_public_url: "http://gw.test".into(),
        public_url: "http://cp.test".into(),
        worker_token: "worker-secret".into(),
        group: "default".into(),
        secure_cookies: false,
    }
}

pub async fn serve(cp: &ControlPlane) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = cp.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}
