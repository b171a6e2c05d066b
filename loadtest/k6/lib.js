// Shared by chat.js and idle.js: configuration from `-e` variables, dev tokens,
// chat creation and the WebSocket URL. Needs a gateway started with `--dev`
// (`POST /dev/token` mints tokens for any user and role).
import http from 'k6/http';
import { check, fail } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { setTimeout, clearTimeout } from 'k6/timers';
import { WebSocket } from 'k6/experimental/websockets';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const WS_URL = BASE_URL.replace(/^http/, 'ws') + '/ws';

// `query` (the default, what browsers do): `/ws?access_token=…`;
// `header`: `Authorization: Bearer …`. Either way the WebSocket metrics are
// tagged `name=/ws` (and so `url=/ws`): no token in k6's output.
const AUTH = (__ENV.AUTH || 'query').toLowerCase();

/** A numeric `-e NAME=value`, or `dflt`. */
export function num(name, dflt) {
  const v = __ENV[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) fail(`${name}=${v} is not a non-negative number`);
  return n;
}

/** A duration in seconds: `-e NAME=30` or `30s`, `2m`, `1h`. */
export function seconds(name, dflt) {
  const v = __ENV[name];
  if (v === undefined || v === '') return dflt;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(v).trim());
  if (!m) fail(`${name}=${v} is not a duration (e.g. 30, 30s, 2m)`);
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] || 's'];
  return Number(m[1]) * unit;
}

/** A per-run prefix for user ids, so repeated runs do not share users. */
export function runId() {
  return __ENV.RUN_ID || `k6${Date.now().toString(36)}`;
}

const JSON_HEADERS = { 'Content-Type': 'application/json' };

/**
 * Dev tokens for `users` ([{sub, role, name}]), fetched in batches.
 * Returns the tokens in the same order; fails the test if any is refused.
 */
export function devTokens(users, batchSize = 100) {
  const tokens = [];
  for (let i = 0; i < users.length; i += batchSize) {
    const reqs = users.slice(i, i + batchSize).map((u) => ({
      method: 'POST',
      url: `${BASE_URL}/dev/token`,
      body: JSON.stringify(u),
      params: { headers: JSON_HEADERS, tags: { name: 'POST /dev/token' } },
    }));
    for (const res of http.batch(reqs)) {
      const ok = check(res, { 'dev token minted': (r) => r.status === 200 });
      if (!ok) {
        fail(`POST /dev/token: HTTP ${res.status} ${res.body} (is the gateway running with --dev?)`);
      }
      tokens.push(res.json('token'));
    }
  }
  return tokens;
}

/**
 * Creates (or finds: the call is idempotent) one chat per pair with a service
 * token, as the booking app does. `pairs` is [{patient, doctor, appointment}].
 * Returns the chat ids in order.
 */
export function createChats(serviceToken, pairs, batchSize = 50) {
  const headers = { ...JSON_HEADERS, Authorization: `Bearer ${serviceToken}` };
  const ids = [];
  for (let i = 0; i < pairs.length; i += batchSize) {
    const reqs = pairs.slice(i, i + batchSize).map((p) => ({
      method: 'POST',
      url: `${BASE_URL}/api/chats`,
      body: JSON.stringify({
        appointment_id: p.appointment,
        patient_id: p.patient,
        doctor_id: p.doctor,
      }),
      params: { headers, tags: { name: 'POST /api/chats' } },
    }));
    for (const res of http.batch(reqs)) {
      const ok = check(res, {
        'chat created': (r) => (r.status === 201 || r.status === 200) && !!r.json('id'),
      });
      if (!ok) fail(`POST /api/chats: HTTP ${res.status} ${res.body}`);
      ids.push(res.json('id'));
    }
  }
  return ids;
}

/** [url, params] for `new WebSocket(url, null, params)` with `token`. */
export function wsTarget(token) {
  const params = { tags: { name: '/ws' } };
  if (AUTH === 'header') {
    params.headers = { Authorization: `Bearer ${token}` };
    return [WS_URL, params];
  }
  return [`${WS_URL}?access_token=${encodeURIComponent(token)}`, params];
}

/** Fails early, with one clear line, when the gateway is not there. */
export function requireReady() {
  const res = http.get(`${BASE_URL}/readyz`, { tags: { name: 'GET /readyz' } });
  if (res.status !== 200) {
    fail(`${BASE_URL}/readyz answered ${res.status || res.error}; start a gateway with --dev first`);
  }
}

// Metrics every WebSocket client records (see connect()).
const helloLatency = new Trend('hello_latency', true);
const helloReceived = new Rate('hello_received');
const connected = new Rate('connected');
const wsErrors = new Counter('ws_errors');
const wsDisconnects = new Counter('ws_disconnects');

/** Counts an `error` frame (or another client-side error) by code. */
export function countError(code) {
  wsErrors.add(1, { code: String(code) });
}

const PROBE_ID = 'k6-hello-probe';

/**
 * Opens one WebSocket client for `me` ({user, token}) and waits for it to be
 * ready, then hands every further frame (parsed) to `onFrame(frame, nowMs)`.
 *
 * Ready means the `hello` frame arrived (checked: right user, a session id).
 * k6's `k6/experimental/websockets` has a race: a frame read before its `open`
 * event has run is silently dropped (`queueMessage` ignores it while the state
 * is not OPEN), and the gateway speaks first. So if no `hello` came
 * `probeMs` after `open`, a `{"type":"ping"}` probe is sent: a `pong` (or any
 * frame) without a `hello` before it means the gateway answered but k6 lost
 * its first frame. The client is then ready too, and `hello_received` records
 * false. No answer at all within `timeoutMs`: a failed check, `connected`
 * false, and the socket is closed.
 *
 * Metrics: hello_latency (WebSocket created → hello), hello_received,
 * connected (per client), ws_errors (socket errors; see countError),
 * ws_disconnects (closes the client did not ask for).
 *
 * Returns { close() } ; `onEnd(disconnected)` runs once the socket is closed.
 */
export function connect(me, { timeoutMs = 10000, probeMs = 1000, onReady, onFrame, onEnd }) {
  const [url, params] = wsTarget(me.token);
  const createdAt = Date.now();
  const ws = new WebSocket(url, null, params);
  let ready = false;
  let closing = false;
  let probeTimer = null;

  const readyTimer = setTimeout(() => {
    if (ready) return;
    connected.add(false);
    helloReceived.add(false);
    check(null, { 'connection answered': () => false });
    close();
  }, timeoutMs);

  function stopTimers() {
    clearTimeout(readyTimer);
    if (probeTimer !== null) clearTimeout(probeTimer);
    probeTimer = null;
  }

  function close() {
    if (closing) return;
    closing = true;
    stopTimers();
    ws.close();
  }

  function becomeReady(hello) {
    ready = true;
    stopTimers();
    connected.add(true);
    helloReceived.add(!!hello);
    onReady(ws, hello);
  }

  ws.onopen = () => {
    probeTimer = setTimeout(() => {
      probeTimer = null;
      if (!ready && !closing && ws.readyState === 1) {
        ws.send(JSON.stringify({ type: 'ping', id: PROBE_ID }));
      }
    }, probeMs);
  };

  ws.onmessage = (e) => {
    const now = Date.now();
    let f;
    try {
      f = JSON.parse(e.data);
    } catch (_) {
      countError('bad_json');
      return;
    }
    if (!ready) {
      if (f.type === 'hello') {
        helloLatency.add(now - createdAt);
        check(f, { 'hello received': (h) => h.user_id === me.user && !!h.session_id });
        becomeReady(f);
        return;
      }
      becomeReady(null); // k6 dropped the hello (see above)
    }
    if (f.type === 'pong' && f.id === PROBE_ID) return;
    onFrame(f, now);
  };

  ws.onerror = (e) => {
    // The gateway drops the TCP connection instead of echoing our close frame,
    // which k6 reports as an error (1006) after we closed: not counted.
    if (closing) return;
    countError('socket');
    console.warn(`client ${me.user}: ${e.error}`);
  };

  ws.onclose = () => {
    const disconnected = !closing;
    if (disconnected) {
      closing = true;
      wsDisconnects.add(1);
      if (!ready) {
        connected.add(false);
        helloReceived.add(false);
        check(null, { 'connection answered': () => false });
      }
    }
    stopTimers();
    if (onEnd) onEnd(disconnected);
  };

  return { close };
}
