// JsSIP 3.13 in Node as a WebRTC-style client of wisp over WSS (issue 14):
// REGISTER, OPTIONS and MESSAGE through wisp to a carrier, answers back over
// the socket. Node has no browser WebSocket, so a small JsSIP.Socket over
// the `ws` package carries the messages (the interface JsSIP documents).
//
//   node client.js wss://127.0.0.1:PORT sip:127.0.0.1:CARRIER_PORT CA.pem
//
// Prints one line per step ("registered", "options 200", "message 200")
// and exits 0 when all three succeeded, 1 otherwise (within 10 s).
'use strict';
const fs = require('fs');
const WebSocket = require('ws');
const JsSIP = require('jssip');

const [url, carrier, caFile] = process.argv.slice(2);
const ca = fs.readFileSync(caFile);
const host = new URL(url).host;

class WsSocket {
  constructor() {
    this.url = url;
    this.via_transport = 'WSS';
    this.sip_uri = `sip:${host};transport=ws`;
    this.onconnect = () => {};
    this.ondisconnect = () => {};
    this.ondata = () => {};
  }
  connect() {
    this.ws = new WebSocket(url, 'sip', { ca });
    this.ws.on('open', () => this.onconnect());
    this.ws.on('close', (code, reason) => this.ondisconnect(code !== 1000, code, String(reason)));
    this.ws.on('error', (e) => console.error(`websocket: ${e.message}`));
    this.ws.on('message', (data, binary) => this.ondata(binary ? data : data.toString()));
  }
  disconnect() {
    if (this.ws) this.ws.close();
  }
  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(message);
    return true;
  }
  isConnected() {
    return this.ws && this.ws.readyState === WebSocket.OPEN;
  }
  isConnecting() {
    return this.ws && this.ws.readyState === WebSocket.CONNECTING;
  }
}

const carrierHost = carrier.replace(/^sip:/, '');
const ua = new JsSIP.UA({
  sockets: [new WsSocket()],
  uri: `sip:alice@${carrierHost}`,
  registrar_server: carrier,
  register: false,
  connection_recovery_min_interval: 1,
  session_timers: false,
});

const fail = (why) => {
  console.log(`failed: ${why}`);
  process.exit(1);
};
setTimeout(() => fail('timeout'), 10000);

ua.on('registrationFailed', (e) => fail(`register ${e.response ? e.response.status_code : e.cause}`));
ua.on('registered', () => {
  console.log('registered');
  ua.sendOptions(`sip:bob@${carrierHost}`, null, {
    eventHandlers: {
      succeeded: (e) => {
        console.log(`options ${e.response.status_code}`);
        ua.sendMessage(`sip:bob@${carrierHost}`, 'hello over wss', {
          eventHandlers: {
            succeeded: (m) => {
              console.log(`message ${m.response.status_code}`);
              ua.stop();
              setTimeout(() => process.exit(0), 200);
            },
            failed: (m) => fail(`message ${m.response ? m.response.status_code : m.cause}`),
          },
        });
      },
      failed: (e) => fail(`options ${e.response ? e.response.status_code : e.cause}`),
    },
  });
});
ua.on('connected', () => ua.register());
ua.start();
