//! wasmtime bindings of the two WIT worlds, and conversions to and from the
//! engine-facing types of `safd-connector`.

pub(crate) mod source_world {
    wasmtime::component::bindgen!({
        path: "../../plugins/sdk/wit",
        world: "safd:connector/source",
        imports: {
            "safd:connector/tls.connect": async | trappable,
            "safd:connector/tls.listen": trappable,
            "safd:connector/tls.[method]listener.accept": trappable,
            "safd:connector/tls.[method]listener.subscribe": trappable,
        },
        exports: { default: async },
        with: {
            // wasmtime-wasi's own, already in the linker.
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "safd:connector/tls.listener": crate::tls_socket::Listener,
        },
    });
}

pub(crate) mod destination_world {
    wasmtime::component::bindgen!({
        path: "../../plugins/sdk/wit",
        world: "safd:connector/destination",
        exports: { default: async },
        with: {
            "safd:connector/types": super::source_world::safd::connector::types,
            "safd:connector/log": super::source_world::safd::connector::log,
            "safd:connector/tls": super::source_world::safd::connector::tls,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

use destination_world::exports::safd::connector::destination_connector as wit_dest;
use safd_connector as api;
use source_world::exports::safd::connector::source_connector as wit_source;
pub(crate) use source_world::safd::connector::types as wit;
use std::time::Duration;

pub(crate) use wit::ConnectorKind;

pub(crate) fn connector_error(err: wit::ConnectorError) -> api::ConnectorError {
    use wit::ConnectorError as E;
    match err {
        E::Transient(m) => api::ConnectorError::Transient(m),
        E::Unavailable(m) => api::ConnectorError::Unavailable(m),
        E::Backpressure(b) => api::ConnectorError::Backpressure {
            retry_after: Duration::from_millis(u64::from(b.retry_after_ms)),
            message: b.message,
        },
        E::Rejected(m) => api::ConnectorError::Rejected(m),
        E::Unauthorized(m) => api::ConnectorError::Unauthorized(m),
        E::Fatal(m) => api::ConnectorError::Fatal(m),
        E::BadCursor(m) => api::ConnectorError::BadCursor(m),
    }
}

/// Guest → host: check the block the plugin returned; its bytes travel on
/// to the queue as they are.
pub(crate) fn batch_from_wit(
    b: wit_source::Batch,
) -> Result<api::SourceBatch, api::event_block::BlockError> {
    Ok(api::SourceBatch {
        events: api::EventBlock::decode(b.events.bytes, b.events.count)?,
        cursor: b.cursor,
        more: b.more,
    })
}

pub(crate) fn poll_limits_to_wit(l: api::PollLimits) -> wit_source::PollLimits {
    wit_source::PollLimits {
        max_events: l.max_events,
        max_bytes: l.max_bytes,
    }
}

/// Host → guest: one sequenced event block per stream batch (already in
/// that encoding: copied, not re-encoded).
pub(crate) fn stream_batches_to_wit(batches: &[api::StreamBatch]) -> Vec<wit::StreamBatch> {
    batches
        .iter()
        .map(|b| wit::StreamBatch {
            stream: b.stream.clone(),
            events: wit::EventBlock {
                count: b.events.len() as u32,
                bytes: b.events.bytes().to_vec(),
            },
            left_out: b
                .left_out
                .iter()
                .map(|&(first, last)| wit::SeqRange { first, last })
                .collect(),
        })
        .collect()
}

fn positions_from_wit(p: Vec<wit::StreamPosition>) -> Vec<api::StreamPosition> {
    p.into_iter()
        .map(|p| api::StreamPosition {
            stream: p.stream,
            seq: p.seq,
        })
        .collect()
}

fn positions_to_wit(p: &[api::StreamPosition]) -> Vec<wit::StreamPosition> {
    p.iter()
        .map(|p| wit::StreamPosition {
            stream: p.stream.clone(),
            seq: p.seq,
        })
        .collect()
}

pub(crate) fn endpoint_to_wit(e: &api::Endpoint) -> wit_dest::Endpoint {
    wit_dest::Endpoint {
        member: e.member.clone(),
        address: e.address.clone(),
        role: match e.role {
            api::MemberRole::Primary => wit_dest::MemberRole::Primary,
            api::MemberRole::Backup => wit_dest::MemberRole::Backup,
            api::MemberRole::Broadcast => wit_dest::MemberRole::Broadcast,
        },
    }
}

pub(crate) fn session_info_to_wit(i: &api::SessionInfo) -> wit_dest::SessionInfo {
    wit_dest::SessionInfo {
        agent_id: i.agent_id.clone(),
        group: i.group.clone(),
        epoch: i.epoch,
        active: i.active,
        stored: positions_to_wit(&i.stored),
        acknowledged: positions_to_wit(&i.acknowledged),
    }
}

pub(crate) fn registration_from_wit(r: wit_dest::Registration) -> api::Registration {
    api::Registration {
        high_water: positions_from_wit(r.high_water),
        service_ready: r.service_ready,
        catch_up: r.catch_up.map(|c| api::CatchUpRequest {
            epoch: c.epoch,
            start: match c.start {
                wit_dest::CatchUpFrom::Positions(p) => {
                    api::CatchUpFrom::Positions(positions_from_wit(p))
                }
                wit_dest::CatchUpFrom::Time(t) => api::CatchUpFrom::Time(t),
            },
        }),
    }
}

pub(crate) fn report_from_wit(r: wit_dest::DeliveryReport) -> api::DeliveryReport {
    api::DeliveryReport {
        acknowledged: positions_from_wit(r.acknowledged),
        rejected: r
            .rejected
            .into_iter()
            .map(|r| api::Rejection {
                stream: r.stream,
                seq: r.seq,
                reason: r.reason,
            })
            .collect(),
    }
}

pub(crate) fn health_from_wit(h: wit_dest::Health) -> api::Health {
    api::Health {
        service_ready: h.service_ready,
        detail: h.detail,
    }
}

pub(crate) fn acknowledgement_from_wit(a: wit_dest::Acknowledgement) -> api::Acknowledgement {
    match a {
        wit_dest::Acknowledgement::DurableCommit => api::Acknowledgement::DurableCommit,
        wit_dest::Acknowledgement::TransportWrite => api::Acknowledgement::TransportWrite,
    }
}

pub(crate) fn config_problems_from_wit(p: Vec<wit::ConfigProblem>) -> Vec<crate::ConfigProblem> {
    p.into_iter()
        .map(|p| crate::ConfigProblem {
            path: p.path,
            message: p.message,
        })
        .collect()
}
