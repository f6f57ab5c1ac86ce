//! `wisp:policy/message`: the message in hand.

use super::bindings::wisp::policy::message::Host;
use super::bindings::Peer;
use super::context::HostState;
use crate::sip::scan::{is_token, split_commas, trim};
use crate::sip::{HeaderName, Uri};

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Headers wisp itself maintains; a policy may read but not write them.
fn host_owned(name: &str) -> bool {
    matches!(
        HeaderName::parse(name.as_bytes()),
        HeaderName::Via | HeaderName::ContentLength | HeaderName::CSeq | HeaderName::CallId
    )
}

fn check_header(name: &str, value: &str) -> Result<(), String> {
    if !is_token(name.as_bytes()) {
        return Err(format!("`{name}` is not a valid header name"));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!("value of `{name}` contains CR, LF or NUL"));
    }
    if host_owned(name) {
        return Err(format!("`{name}` is maintained by wisp and cannot be changed by a policy"));
    }
    Ok(())
}

impl Host for HostState {
    fn method(&mut self) -> wasmtime::Result<String> {
        self.trace(|| "message.method()".to_string());
        Ok(lossy(self.call()?.msg.method_bytes()))
    }

    fn status(&mut self) -> wasmtime::Result<Option<u16>> {
        self.trace(|| "message.status()".to_string());
        Ok(self.call()?.msg.status())
    }

    fn request_uri(&mut self) -> wasmtime::Result<Option<String>> {
        self.trace(|| "message.request-uri()".to_string());
        Ok(self.call()?.msg.request_uri().map(lossy))
    }

    fn set_request_uri(&mut self, uri: String) -> wasmtime::Result<Result<(), String>> {
        self.trace(|| format!("message.set-request-uri({:?})", uri));
        let call = self.call()?;
        if !call.msg.is_request() {
            return Ok(Err("a reply has no request-URI".into()));
        }
        if let Err(e) = Uri::parse(uri.as_bytes()) {
            return Ok(Err(format!("`{uri}`: {e}")));
        }
        call.msg.set_request_uri(uri.as_bytes());
        Ok(Ok(()))
    }

    fn header(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        self.trace(|| format!("message.header({:?})", name));
        let msg = &self.call()?.msg;
        let Some(v) = msg.values_named(name.as_bytes()).next() else { return Ok(None) };
        // For a list header, the first element of the first line.
        let first = match HeaderName::parse(name.as_bytes()).is_list() {
            true => crate::sip::scan::element_end(v).map_or(v, |end| trim(&v[..end])),
            false => v,
        };
        Ok(Some(lossy(first)))
    }

    fn header_all(&mut self, name: String) -> wasmtime::Result<Vec<String>> {
        self.trace(|| format!("message.header-all({:?})", name));
        let msg = &self.call()?.msg;
        let list = HeaderName::parse(name.as_bytes()).is_list();
        let mut out = Vec::new();
        for v in msg.values_named(name.as_bytes()) {
            match split_commas(v).filter(|_| list) {
                Some(parts) => out.extend(parts.into_iter().map(|(s, e)| lossy(trim(&v[s..e])))),
                None => out.push(lossy(v)),
            }
        }
        Ok(out)
    }

    fn set_header(&mut self, name: String, value: String) -> wasmtime::Result<Result<(), String>> {
        self.trace(|| format!("message.set-header({:?}, {:?})", name, value));
        if let Err(e) = check_header(&name, &value) {
            return Ok(Err(e));
        }
        self.call()?.msg.set_header(&name, value.as_bytes());
        Ok(Ok(()))
    }

    fn append_header(&mut self, name: String, value: String) -> wasmtime::Result<Result<(), String>> {
        self.trace(|| format!("message.append-header({:?}, {:?})", name, value));
        if let Err(e) = check_header(&name, &value) {
            return Ok(Err(e));
        }
        self.call()?.msg.append_header(&name, value.as_bytes());
        Ok(Ok(()))
    }

    fn remove_header(&mut self, name: String) -> wasmtime::Result<u32> {
        self.trace(|| format!("message.remove-header({:?})", name));
        if host_owned(&name) {
            return Ok(0);
        }
        Ok(self.call()?.msg.remove_header(name.as_bytes()))
    }

    fn has_to_tag(&mut self) -> wasmtime::Result<bool> {
        self.trace(|| "message.has-to-tag()".to_string());
        Ok(self.call()?.msg.has_to_tag())
    }

    fn source(&mut self) -> wasmtime::Result<Peer> {
        self.trace(|| "message.source()".to_string());
        let call = self.call()?;
        Ok(Peer {
            address: call.source.ip().to_string(),
            port: call.source.port(),
            transport: call.transport.as_str().to_string(),
        })
    }

    fn body_length(&mut self) -> wasmtime::Result<u32> {
        self.trace(|| "message.body-length()".to_string());
        Ok(self.call()?.msg.body().len() as u32)
    }
}
