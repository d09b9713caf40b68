//! Benchmark anchor: the minimal syncpoint on tokio + hyper 0.14.
//! POST /wait-for-second-party/:id pairs two parties (200, each gets the other's body),
//! a lone first party gets 408 after ?timeout_ms= or 10 s. A waiting party whose
//! connection closes has its future dropped by hyper, which closes its channel; the next
//! arrival sees the closed channel and waits instead of pairing with it.
use hyper::service::{make_service_fn, service_fn};
use hyper::{body::Bytes, Body, Method, Request, Response, Server, StatusCode};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

struct Waiting {
    payload: Bytes,
    wake: oneshot::Sender<Bytes>,
}

type State = Arc<Mutex<HashMap<String, Waiting>>>;

fn json(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

fn paired(role: &str, peer: &Bytes) -> Response<Body> {
    let text = String::from_utf8_lossy(peer);
    json(StatusCode::OK, format!("{{\"status\":\"paired\",\"role\":\"{}\",\"peer_payload\":{:?}}}", role, text))
}

async fn handle(state: State, req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path == "/healthz" {
        let waiting = state.lock().unwrap().len();
        return Ok(json(StatusCode::OK, format!("{{\"status\":\"ok\",\"waiting\":{}}}", waiting)));
    }
    let id = match path.strip_prefix("/wait-for-second-party/") {
        Some(id) if req.method() == Method::POST && !id.is_empty() && id.len() <= 128 => id.to_string(),
        _ => return Ok(json(StatusCode::NOT_FOUND, "{\"code\":\"not_found\"}".into())),
    };
    let timeout_ms: u64 = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("timeout_ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let payload = hyper::body::to_bytes(req.into_body()).await.unwrap_or_default();
    let rx = {
        let mut map = state.lock().unwrap();
        match map.remove(&id) {
            Some(first) if !first.wake.is_closed() => {
                let peer = first.payload.clone();
                if first.wake.send(payload).is_ok() {
                    return Ok(paired("second", &peer));
                }
                // The first party left between the check and the send: wait instead.
                let (tx, rx) = oneshot::channel();
                map.insert(id.clone(), Waiting { payload: Bytes::new(), wake: tx });
                rx
            }
            _ => {
                let (tx, rx) = oneshot::channel();
                map.insert(id.clone(), Waiting { payload, wake: tx });
                rx
            }
        }
    };
    match tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await {
        Ok(Ok(peer)) => Ok(paired("first", &peer)),
        _ => {
            let mut map = state.lock().unwrap();
            if map.get(&id).map_or(false, |w| w.wake.is_closed()) {
                map.remove(&id);
            }
            Ok(json(StatusCode::REQUEST_TIMEOUT, "{\"code\":\"timeout\"}".into()))
        }
    }
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(8081);
    let state: State = Arc::new(Mutex::new(HashMap::new()));
    let make = make_service_fn(move |_| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(service_fn(move |req| handle(state.clone(), req))) }
    });
    let server = Server::bind(&([127, 0, 0, 1], port).into()).serve(make);
    eprintln!("syncpoint-tokio listening on http://{}", server.local_addr());
    server.await.unwrap();
}
