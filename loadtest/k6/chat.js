// k6 mirror of the `chat` scenario: PAIRS patient–doctor pairs, every patient
// and every doctor its own WebSocket client (one VU each), sending at a fixed
// total RATE (messages/s, open loop: sends are scheduled by the clock, never
// by replies) for DURATION, then listening DRAIN more seconds for stragglers.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e PAIRS=20 -e RATE=500 -e DURATION=20s loadtest/k6/chat.js
//
// Needs a gateway with `--dev`. Each client's rate is RATE / (2·PAIRS); the
// gateway limits each user to SEND_RATE_PER_SECOND (default 10, bursts of 30),
// so for more than that per client start the gateway with a higher limit.
//
// Measured (custom metrics):
//   ack_latency        send → `ack` frame, on the sending client
//   delivery_latency   send → `message` frame on the peer (the send time rides
//                      in the body; both clients are in this process, one clock)
//   send_lag           scheduled → actual send time (k6 falling behind)
//   hello_latency      WebSocket created → `hello` frame (see lib.js: connect)
//   delivery_success   per message the peer should have seen: seen or not.
//                      "Should have": its seq lies between the lowest and
//                      highest seq the client saw in its chat (own acks and
//                      peer messages), so a peer still connecting or a socket
//                      closed early does not count as a loss.
//   messages_sent / messages_acked / messages_delivered, ws_errors (error frames
//   by code, and socket errors), ws_disconnects (closes the client did not ask
//   for), connected (per client: the gateway answered), hello_received.
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import { setTimeout, clearTimeout } from 'k6/timers';
import { connect, countError, createChats, devTokens, num, requireReady, runId, seconds } from './lib.js';

const PAIRS = Math.max(1, Math.floor(num('PAIRS', 10)));
const RATE = num('RATE', 50); // messages per second, all clients together
const DURATION = seconds('DURATION', 30);
const WARMUP = seconds('WARMUP', 2); // after the scenario starts, before the first send
const DRAIN = seconds('DRAIN', 3); // after the last send, before closing
const HELLO_TIMEOUT = seconds('HELLO_TIMEOUT', 10);
const BODY_CHARS = Math.floor(num('BODY_CHARS', 0)); // padding added to each body
const ACK_P95_MS = num('ACK_P95_MS', 250);
const DELIVERY_P95_MS = num('DELIVERY_P95_MS', 250);

const CLIENTS = 2 * PAIRS;
const PER_CLIENT_RATE = RATE / CLIENTS;

const ackLatency = new Trend('ack_latency', true);
const deliveryLatency = new Trend('delivery_latency', true);
const sendLag = new Trend('send_lag', true);
const deliverySuccess = new Rate('delivery_success');
const sent = new Counter('messages_sent');
const acked = new Counter('messages_acked');
const delivered = new Counter('messages_delivered');

export const options = {
  setupTimeout: '120s',
  scenarios: {
    chat: {
      executor: 'per-vu-iterations',
      vus: CLIENTS,
      iterations: 1,
      maxDuration: `${Math.ceil(WARMUP + DURATION + DRAIN + HELLO_TIMEOUT + 30)}s`,
    },
  },
  thresholds: {
    ack_latency: [`p(95)<${ACK_P95_MS}`],
    delivery_latency: [`p(95)<${DELIVERY_P95_MS}`],
    delivery_success: ['rate>0.99'],
    messages_delivered: ['count>0'],
    connected: ['rate>0.99'],
    ws_disconnects: ['count<1'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
};

export function setup() {
  requireReady();
  if (PER_CLIENT_RATE > 10) {
    console.warn(
      `each client sends ${PER_CLIENT_RATE.toFixed(1)} msg/s; the gateway's default ` +
        'SEND_RATE_PER_SECOND is 10 (sends beyond it are refused rate_limited)',
    );
  }
  const run = runId();
  const pairs = [];
  const users = [{ sub: `${run}-booking`, role: 'service', name: 'k6 booking' }];
  for (let i = 0; i < PAIRS; i++) {
    const patient = `${run}-p${i}`;
    const doctor = `${run}-d${i}`;
    pairs.push({ patient, doctor, appointment: `${run}-a${i}` });
    users.push({ sub: patient, role: 'patient', name: `k6 patient ${i}` });
    users.push({ sub: doctor, role: 'doctor', name: `k6 doctor ${i}` });
  }
  const tokens = devTokens(users);
  const chats = createChats(tokens[0], pairs);
  // clients[2i] is pair i's patient, clients[2i+1] its doctor.
  const clients = [];
  for (let i = 0; i < PAIRS; i++) {
    clients.push({ user: pairs[i].patient, token: tokens[1 + 2 * i], chat: chats[i] });
    clients.push({ user: pairs[i].doctor, token: tokens[2 + 2 * i], chat: chats[i] });
  }
  return { clients };
}

export default function (data) {
  const index = exec.vu.idInTest - 1;
  const me = data.clients[index];
  const start = exec.scenario.startTime;
  const firstAt = start + WARMUP * 1000;
  const stopAt = firstAt + DURATION * 1000;
  const closeAt = stopAt + DRAIN * 1000;
  const interval = PER_CLIENT_RATE > 0 ? 1000 / PER_CLIENT_RATE : Infinity;
  // Spread the clients' phases so the total rate is smooth, not in bursts.
  let nextAt = interval === Infinity ? Infinity : firstAt + (index / CLIENTS) * interval;
  const pad = BODY_CHARS > 0 ? ' ' + 'x'.repeat(BODY_CHARS) : '';

  const pending = new Map(); // request id -> send time (ms)
  const seen = new Set(); // every seq of our chat seen: own acks and peer messages
  let lastPeerSeq = 0;
  let n = 0;
  let ws = null;
  let sendTimer = null;
  let closeTimer = null;
  let ended = false;

  function sendDue() {
    sendTimer = null;
    if (ended) return;
    const now = Date.now();
    while (nextAt <= now && nextAt < stopAt) {
      n += 1;
      const t = Date.now();
      ws.send(
        JSON.stringify({
          type: 'send',
          id: n,
          chat_id: me.chat,
          client_msg_id: `${me.user}-${n}`,
          body: `k6 ${t} ${me.user} ${n}${pad}`,
        }),
      );
      pending.set(n, t);
      sent.add(1);
      sendLag.add(t - nextAt);
      nextAt += interval;
    }
    if (nextAt < stopAt) sendTimer = setTimeout(sendDue, Math.max(0, nextAt - Date.now()));
  }

  const client = connect(me, {
    timeoutMs: HELLO_TIMEOUT * 1000,
    onReady(socket) {
      ws = socket;
      if (nextAt < stopAt) sendTimer = setTimeout(sendDue, Math.max(0, nextAt - Date.now()));
      closeTimer = setTimeout(() => client.close(), Math.max(0, closeAt - Date.now()));
    },
    onFrame(f, now) {
      switch (f.type) {
        case 'ack': {
          const t = pending.get(f.id);
          if (t === undefined) return;
          pending.delete(f.id);
          ackLatency.add(now - t);
          acked.add(1);
          const seq = f.message && f.message.seq;
          check(f, { 'send acked': () => Number.isInteger(seq) && seq > 0 });
          if (Number.isInteger(seq)) seen.add(seq);
          break;
        }
        case 'message': {
          const m = f.message || {};
          if (m.chat_id !== me.chat || m.sender_id === me.user) return;
          const match = /^k6 (\d+) /.exec(m.body || '');
          if (match) deliveryLatency.add(now - Number(match[1]));
          delivered.add(1);
          check(m, { 'delivered in seq order': () => m.seq > lastPeerSeq });
          lastPeerSeq = Math.max(lastPeerSeq, m.seq);
          if (!seen.has(m.seq)) deliverySuccess.add(true);
          seen.add(m.seq);
          break;
        }
        case 'error': {
          countError(f.code);
          if (pending.has(f.id)) {
            pending.delete(f.id);
            check(f, { 'send acked': () => false });
          }
          break;
        }
        default:
          // presence, chat, unread, read, typing: not measured here.
          break;
      }
    },
    onEnd() {
      ended = true;
      if (sendTimer !== null) clearTimeout(sendTimer);
      if (closeTimer !== null) clearTimeout(closeTimer);
      // Sends never answered before the socket closed.
      for (let i = 0; i < pending.size; i++) check(null, { 'send acked': () => false });
      pending.clear();
      // Peer messages of our chat missed: seqs between the lowest and highest
      // seen (own acks and peer messages) that are neither.
      if (seen.size > 0) {
        let lo = Infinity;
        let hi = 0;
        for (const s of seen) {
          lo = Math.min(lo, s);
          hi = Math.max(hi, s);
        }
        for (let s = lo; s <= hi; s++) if (!seen.has(s)) deliverySuccess.add(false);
      }
    },
  });
}
