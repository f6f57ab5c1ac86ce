//! WASI for policies built with a plain `cargo build --target wasm32-wasip2`:
//! such components import `wasi:*` interfaces even when they do no I/O. wisp
//! gives them no ambient authority: the environment and arguments are empty,
//! stdout and stderr are lines of wisp's log (tagged with the policy and the
//! stream, under the policy's log budget), and every other WASI function
//! (files, sockets, clocks, stdin, random) traps if called. Imports outside `wasi:*` and `wisp:policy/*` are refused,
//! and so are `wisp:policy/*` imports of another package version (they
//! must not be stubbed as traps: the policy would load and then fail on
//! its first host call).

use wasmtime::component::{Component, ComponentType, Linker, Lower, Resource, ResourceType};
use wasmtime::{Engine, StoreContextMut};

use super::context::HostState;

/// `wasi:io/streams` output-stream, as wisp provides it: the policy's
/// stdout (rep 1) or stderr (rep 2).
struct OutputStream;

/// `wasi:io/error` error (never made: writes do not fail).
struct IoError;

/// `wasi:io/poll` pollable of an output stream: always ready (a write
/// never waits).
struct Pollable;

/// `wasi:io/streams` stream-error.
#[derive(ComponentType, Lower)]
#[component(variant)]
#[allow(dead_code)] // the type must name both cases; wisp returns neither
enum StreamError {
    #[component(name = "last-operation-failed")]
    LastOperationFailed(Resource<IoError>),
    #[component(name = "closed")]
    Closed,
}

/// Longest line kept from a policy's stdout/stderr before it is logged.
const MAX_STDIO_LINE: usize = 2048;

/// Bytes the policy wrote to stdout or stderr: complete lines go to the log.
fn write_stdio(mut store: StoreContextMut<'_, HostState>, rep: u32, bytes: &[u8]) {
    let state = store.data_mut();
    let buf = if rep == 2 { &mut state.stderr } else { &mut state.stdout };
    buf.extend_from_slice(bytes);
    let stream = if rep == 2 { "stderr" } else { "stdout" };
    let mut lines = Vec::new();
    while let Some(end) = buf.iter().position(|&b| b == b'\n') {
        lines.push(buf.drain(..=end).collect::<Vec<u8>>());
    }
    if buf.len() > MAX_STDIO_LINE {
        lines.push(std::mem::take(buf));
    }
    for line in lines {
        let text = String::from_utf8_lossy(&line);
        state.log_stdio(stream, text.trim_end());
    }
}

/// stdout and stderr as log lines: `get-stdout`/`get-stderr` and the
/// output-stream methods the Rust standard library calls. The instances are
/// named as the component imports them (any 0.2.x).
fn add_stdio(linker: &mut Linker<HostState>, imports: &[String]) -> wasmtime::Result<()> {
    let named = |prefix: &str| imports.iter().find(|n| n.starts_with(prefix)).cloned();
    let Some(streams) = named("wasi:io/streams@") else { return Ok(()) };
    // Every instance that names these resources (a `use` re-exports them:
    // streams, stdout, filesystem, sockets) must give them the same host
    // type; extra names in an instance the component does not use are
    // ignored.
    for name in imports.iter().filter(|n| n.starts_with("wasi:")) {
        let mut i = linker.instance(name)?;
        i.resource("error", ResourceType::host::<IoError>(), |_, _| Ok(()))?;
        i.resource("output-stream", ResourceType::host::<OutputStream>(), |_, _| Ok(()))?;
        i.resource("pollable", ResourceType::host::<Pollable>(), |_, _| Ok(()))?;
    }
    if let Some(poll) = named("wasi:io/poll@") {
        let mut p = linker.instance(&poll)?;
        p.func_wrap("[method]pollable.block", |_, (_,): (Resource<Pollable>,)| Ok(()))?;
        p.func_wrap("[method]pollable.ready", |_, (_,): (Resource<Pollable>,)| Ok((true,)))?;
        p.func_wrap("poll", |_, (all,): (Vec<Resource<Pollable>>,)| {
            Ok(((0..all.len() as u32).collect::<Vec<u32>>(),))
        })?;
    }
    let mut s = linker.instance(&streams)?;
    s.func_wrap("[method]output-stream.check-write", |_, (_,): (Resource<OutputStream>,)| {
        Ok((Ok::<u64, StreamError>(65_536),))
    })?;
    for method in ["[method]output-stream.write", "[method]output-stream.blocking-write-and-flush"] {
        s.func_wrap(
            method,
            |store: StoreContextMut<'_, HostState>, (this, bytes): (Resource<OutputStream>, Vec<u8>)| {
                write_stdio(store, this.rep(), &bytes);
                Ok((Ok::<(), StreamError>(()),))
            },
        )?;
    }
    s.func_wrap("[method]output-stream.subscribe", |_, (_,): (Resource<OutputStream>,)| {
        Ok((Resource::<Pollable>::new_own(0),))
    })?;
    for method in ["[method]output-stream.flush", "[method]output-stream.blocking-flush"] {
        s.func_wrap(method, |_, (_,): (Resource<OutputStream>,)| Ok((Ok::<(), StreamError>(()),)))?;
    }
    for (prefix, get, rep) in [("wasi:cli/stdout@", "get-stdout", 1), ("wasi:cli/stderr@", "get-stderr", 2)] {
        if let Some(name) = named(prefix) {
            linker.instance(&name)?.func_wrap(get, move |_, (): ()| Ok((Resource::<OutputStream>::new_own(rep),)))?;
        }
    }
    Ok(())
}

pub fn add_inert(linker: &mut Linker<HostState>, engine: &Engine, component: &Component) -> wasmtime::Result<()> {
    let ty = component.component_type();
    let version = super::bindings::WIT_WORLD.rsplit('@').next().unwrap_or_default();
    let names: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    add_stdio(linker, &names)?;
    for (name, _) in ty.imports(engine) {
        if let Some(rest) = name.strip_prefix("wisp:policy/") {
            let theirs = rest.rsplit_once('@').map_or("(none)", |(_, v)| v);
            if theirs != version {
                wasmtime::bail!(
                    "imports `{name}`: built for wisp:policy@{theirs}, this wisp speaks @{version}; \
                     rebuild the policy against the current guest SDK"
                );
            }
            continue;
        }
        if !name.starts_with("wasi:") {
            wasmtime::bail!("imports `{name}`, which wisp does not provide (only wisp:policy/* and wasi:*)");
        }
        if name.starts_with("wasi:cli/environment@") {
            let mut env = linker.instance(name)?;
            env.func_wrap("get-environment", |_, (): ()| Ok((Vec::<(String, String)>::new(),)))?;
            env.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
            env.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
        }
    }
    linker.define_unknown_imports_as_traps(component)?;
    Ok(())
}
