//! WASI for policies built with a plain `cargo build --target wasm32-wasip2`:
//! such components import `wasi:*` interfaces even when they do no I/O. wisp
//! gives them no ambient authority: the environment and arguments are empty,
//! and every other WASI function (files, sockets, clocks, stdio, random)
//! traps if called. Imports outside `wasi:*` and `wisp:policy/*` are refused,
//! and so are `wisp:policy/*` imports of another package version (they
//! must not be stubbed as traps: the policy would load and then fail on
//! its first host call).

use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use super::context::HostState;

pub fn add_inert(linker: &mut Linker<HostState>, engine: &Engine, component: &Component) -> wasmtime::Result<()> {
    let ty = component.component_type();
    let version = super::bindings::WIT_WORLD.rsplit('@').next().unwrap_or_default();
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
