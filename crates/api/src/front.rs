//! What every request on the client port passes before its service: the
//! learner gate ([`crate::learner::gate`]) and go-grpc-prometheus's counting
//! ([`crate::grpc_metrics`]). One tower layer around all routes, with its own
//! future and body types: no boxed future per request and no extra routing
//! layer per service (the two axum middleware functions it replaces cost about
//! a fifth of a serializable range's server CPU).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{Request, Response};
use etcd_daemon::EtcdServer;
use tonic::body::Body;
use tower_service::Service;

use crate::grpc_metrics::{Call, Counted};

/// Wraps a service in [`Front`].
#[derive(Clone)]
pub(crate) struct FrontLayer {
    pub server: Arc<EtcdServer>,
}

impl<S> tower_layer::Layer<S> for FrontLayer {
    type Service = Front<S>;

    fn layer(&self, inner: S) -> Front<S> {
        Front { inner, server: self.server.clone() }
    }
}

/// The gate and the counting in front of `inner`.
#[derive(Clone)]
pub(crate) struct Front<S> {
    inner: S,
    server: Arc<EtcdServer>,
}

impl<S> Service<Request<Body>> for Front<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Counted>;
    type Error = S::Error;
    type Future = FrontFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let call = Call::start(&self.server, &mut request);
        if let Some(status) = crate::learner::gate(&self.server, request.uri().path()) {
            return FrontFuture::Refused { response: Some(status.into_http()), call };
        }
        FrontFuture::Serving { future: self.inner.call(request), call }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer (or the gate's), counted.
    #[project = FrontFutureProjection]
    pub(crate) enum FrontFuture<F> {
        Refused { response: Option<Response<Body>>, call: Option<Call> },
        Serving { #[pin] future: F, call: Option<Call> },
    }
}

impl<F, E> Future for FrontFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Counted>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (response, call) = match self.project() {
            FrontFutureProjection::Refused { response, call } => {
                (response.take().expect("a refusal is answered once"), call.take())
            }
            FrontFutureProjection::Serving { future, call } => match future.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Ready(Ok(response)) => (response, call.take()),
            },
        };
        Poll::Ready(Ok(match call {
            Some(call) => call.respond(response),
            None => response.map(Counted::passing),
        }))
    }
}
