// k6 mirror of the `idle` scenario: CONNECTIONS authenticated WebSocket
// clients (one VU each, a distinct user each, patients and doctors
// alternating) that connect, check that the `hello` frame arrives, and then
// hold the connection open, silent. Connections open WARMUP seconds after the
// scenario starts (k6 is still busy starting VUs before that), spread over
// RAMP seconds (0: all at once), and all close together DURATION seconds after
// the last one opened: every connection is held open at once for DURATION.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e CONNECTIONS=1000 -e RAMP=10s -e DURATION=60s loadtest/k6/idle.js
//
// Needs a gateway with `--dev`. PING_EVERY (seconds, default 0 = never) sends
// a `ping` frame at that interval and checks that the `pong` comes back.
//
// Measured (custom metrics):
//   hello_latency      WebSocket created → `hello` frame
//   hello_received     per connection: the `hello` frame arrived. The threshold
//                      allows a few misses: k6's experimental WebSocket drops a
//                      frame that arrives before its `open` event has run (see
//                      lib.js: connect), which a busy k6 does for ~0.1–0.5% of
//                      connections; a gateway that sends no hello scores 0.
//   connected          per connection: the gateway answered (hello or probe)
//   pong_latency       `ping` → `pong` (only with PING_EVERY)
//   connections_held   per connection: open until the end, or not
//   ws_errors (error frames by code, and socket errors), ws_disconnects
//   (closes the client did not ask for).
import { check } from 'k6';
import exec from 'k6/execution';
import { Rate, Trend } from 'k6/metrics';
import { setInterval, clearInterval, setTimeout, clearTimeout } from 'k6/timers';
import { connect, countError, devTokens, num, requireReady, runId, seconds } from './lib.js';

const CONNECTIONS = Math.max(1, Math.floor(num('CONNECTIONS', 100)));
const DURATION = seconds('DURATION', 30);
const RAMP = seconds('RAMP', 0);
const WARMUP = seconds('WARMUP', 1);
const HELLO_TIMEOUT = seconds('HELLO_TIMEOUT', 10);
const PING_EVERY = seconds('PING_EVERY', 0);
const HELLO_P95_MS = num('HELLO_P95_MS', 1000);

const pongLatency = new Trend('pong_latency', true);
const held = new Rate('connections_held');

export const options = {
  setupTimeout: `${Math.ceil(60 + CONNECTIONS / 100)}s`,
  scenarios: {
    idle: {
      executor: 'per-vu-iterations',
      vus: CONNECTIONS,
      iterations: 1,
      maxDuration: `${Math.ceil(WARMUP + RAMP + DURATION + HELLO_TIMEOUT + 30)}s`,
    },
  },
  thresholds: {
    hello_latency: [`p(95)<${HELLO_P95_MS}`],
    hello_received: ['rate>0.9'],
    connected: ['rate>0.99'],
    connections_held: ['rate>0.99'],
    ws_disconnects: ['count<1'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
};

export function setup() {
  requireReady();
  const run = runId();
  const users = [];
  for (let i = 0; i < CONNECTIONS; i++) {
    const role = i % 2 === 0 ? 'patient' : 'doctor';
    users.push({ sub: `${run}-i${i}`, role, name: `k6 idle ${i}` });
  }
  const tokens = devTokens(users);
  return { clients: users.map((u, i) => ({ user: u.sub, token: tokens[i] })) };
}

export default function (data) {
  const index = exec.vu.idInTest - 1;
  const me = data.clients[index];
  const start = exec.scenario.startTime;
  const connectAt = start + (WARMUP + (RAMP * index) / CONNECTIONS) * 1000;
  const closeAt = start + (WARMUP + RAMP + DURATION) * 1000;
  setTimeout(() => hold(me, closeAt), Math.max(0, connectAt - Date.now()));
}

function hold(me, closeAt) {
  let ready = false;
  let pingTimer = null;
  let closeTimer = null;
  const pings = []; // send times of unanswered pings, oldest first

  const client = connect(me, {
    timeoutMs: HELLO_TIMEOUT * 1000,
    onReady(ws) {
      ready = true;
      closeTimer = setTimeout(() => {
        closeTimer = null;
        if (pingTimer !== null) clearInterval(pingTimer);
        pingTimer = null;
        held.add(true);
        client.close();
      }, Math.max(0, closeAt - Date.now()));
      if (PING_EVERY > 0) {
        pingTimer = setInterval(() => {
          if (ws.readyState !== 1) return; // OPEN
          pings.push(Date.now());
          ws.send('{"type":"ping"}');
        }, PING_EVERY * 1000);
      }
    },
    onFrame(f, now) {
      if (f.type === 'pong') {
        const t = pings.shift();
        if (t !== undefined) pongLatency.add(now - t);
      } else if (f.type === 'error') {
        countError(f.code);
      }
    },
    onEnd(disconnected) {
      if (pingTimer !== null) clearInterval(pingTimer);
      if (closeTimer !== null) clearTimeout(closeTimer);
      if (disconnected || !ready) held.add(false);
      pingTimer = null;
      closeTimer = null;
      if (PING_EVERY > 0 && ready) {
        // A ping sent just before the close may not have its answer yet.
        const now = Date.now();
        check(pings, { 'every ping answered': (p) => p.every((t) => now - t < 2000) });
      }
    },
  });
}
