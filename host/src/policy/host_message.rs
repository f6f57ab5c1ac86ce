//! `wisp:policy/message`: the message in hand. Every edit is checked by
//! [`super::validate`] first.

use super::bindings::wisp::policy::message::Host;
use super::bindings::{EditError, Method, Peer, Transport};
use super::context::HostState;
use super::validate;
use crate::sip::scan::{split_commas, trim};
use crate::sip::HeaderName;

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The WIT method of a request's method token.
fn method(token: &[u8]) -> Method {
    match token {
        b"INVITE" => Method::Invite,
        b"ACK" => Method::Ack,
        b"BYE" => Method::Bye,
        b"CANCEL" => Method::Cancel,
        b"OPTIONS" => Method::Options,
        b"REGISTER" => Method::Register,
        b"SUBSCRIBE" => Method::Subscribe,
        b"NOTIFY" => Method::Notify,
        b"REFER" => Method::Refer,
        b"INFO" => Method::Info,
        b"UPDATE" => Method::Update,
        b"PRACK" => Method::Prack,
        b"MESSAGE" => Method::Message,
        b"PUBLISH" => Method::Publish,
        other => Method::Other(lossy(other)),
    }
}

/// The WIT transport of a listen entry's.
pub(super) fn transport(p: crate::transport::Proto) -> Transport {
    match p {
        crate::transport::Proto::Udp => Transport::Udp,
        crate::transport::Proto::Tcp => Transport::Tcp,
        crate::transport::Proto::Tls => Transport::Tls,
        crate::transport::Proto::Ws => Transport::Ws,
        crate::transport::Proto::Wss => Transport::Wss,
    }
}

impl Host for HostState {
    fn method(&mut self) -> wasmtime::Result<Method> {
        self.trace(|| "message.method()".to_string());
        Ok(method(self.call()?.msg.method_bytes()))
    }

    fn status(&mut self) -> wasmtime::Result<Option<u16>> {
        self.trace(|| "message.status()".to_string());
        Ok(self.call()?.msg.status())
    }

    fn request_uri(&mut self) -> wasmtime::Result<Option<String>> {
        self.trace(|| "message.request-uri()".to_string());
        Ok(self.call()?.msg.request_uri().map(lossy))
    }

    fn set_request_uri(&mut self, uri: String) -> wasmtime::Result<Result<(), EditError>> {
        self.trace(|| format!("message.set-request-uri({:?})", uri));
        let limits = self.edit_limits;
        let call = self.call()?;
        if let Err(e) = validate::request_uri(&call.msg, &uri, limits) {
            return Ok(Err(e));
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

    fn set_header(&mut self, name: String, value: String) -> wasmtime::Result<Result<(), EditError>> {
        self.trace(|| format!("message.set-header({:?}, {:?})", name, value));
        let limits = self.edit_limits;
        let call = self.call()?;
        if let Err(e) = validate::header_edit(&call.msg, &name, &value, true, limits) {
            return Ok(Err(e));
        }
        call.msg.set_header(&name, value.as_bytes());
        Ok(Ok(()))
    }

    fn append_header(&mut self, name: String, value: String) -> wasmtime::Result<Result<(), EditError>> {
        self.trace(|| format!("message.append-header({:?}, {:?})", name, value));
        let limits = self.edit_limits;
        let call = self.call()?;
        if let Err(e) = validate::header_edit(&call.msg, &name, &value, false, limits) {
            return Ok(Err(e));
        }
        call.msg.append_header(&name, value.as_bytes());
        Ok(Ok(()))
    }

    fn remove_header(&mut self, name: String) -> wasmtime::Result<Result<u32, EditError>> {
        self.trace(|| format!("message.remove-header({:?})", name));
        if let Err(e) = validate::header_removal(&name) {
            return Ok(Err(e));
        }
        Ok(Ok(self.call()?.msg.remove_header(name.as_bytes())))
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
            transport: transport(call.transport),
        })
    }

    fn body_length(&mut self) -> wasmtime::Result<u32> {
        self.trace(|| "message.body-length()".to_string());
        Ok(self.call()?.msg.body().len() as u32)
    }

    fn is_myself(&mut self, uri: String) -> wasmtime::Result<bool> {
        self.trace(|| format!("message.is-myself({:?})", uri));
        Ok(self.myself.is_myself(uri.as_bytes()))
    }
}
