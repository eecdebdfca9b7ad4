//! Linking wasi:http for plugins that request it, without the host-side
//! leak of wasmtime-wasi-http 48's `outgoing-handler.handle`.
//!
//! `handle(request, options)` takes ownership of its `request-options`
//! resource, but wasmtime-wasi-http 48 only reads the options and never
//! removes them from the instance's resource table: every request that
//! passes options (mgmt-http passes its timeouts) left one entry behind,
//! and a long-lived instance ran into the table's capacity after about a
//! thousand requests ("resource table has no free keys"; found by the
//! soak). This module links wasmtime-wasi-http's interfaces, then shadows
//! `handle` with the same implementation followed by the missing delete.

use crate::state::InstanceState;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::{outgoing_handler, types};
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};

/// The interface as wasmtime-wasi-http 48 registers it.
const OUTGOING_HANDLER: &str = "wasi:http/outgoing-handler@0.2.12";

type HandleResult = Result<Resource<HostFutureIncomingResponse>, types::ErrorCode>;

pub(crate) fn add_to_linker(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    linker.allow_shadowing(true);
    let defined = linker.instance(OUTGOING_HANDLER)?.func_wrap(
        "handle",
        |mut store: StoreContextMut<'_, InstanceState>,
         (request, options): (
            Resource<HostOutgoingRequest>,
            Option<Resource<types::RequestOptions>>,
        )|
         -> wasmtime::Result<(HandleResult,)> {
            let mut view = store.data_mut().http();
            // `handle` consumes its handle to the options but leaves the
            // entry; a second handle to the same entry removes it after.
            let owned = options
                .as_ref()
                .map(|o| Resource::<types::RequestOptions>::new_own(o.rep()));
            let result = outgoing_handler::Host::handle(&mut view, request, options);
            if let Some(owned) = owned {
                let _ = view.table.delete(owned);
            }
            Ok((match result {
                Ok(pending) => Ok(pending),
                Err(err) => Err(types::Host::convert_error_code(&mut view, err)?),
            },))
        },
    );
    linker.allow_shadowing(false);
    defined
}
