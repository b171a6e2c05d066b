// One WebSocket to /ws that keeps itself alive: exponential back-off with
// jitter, a heartbeat, token refresh on 4001 and quick but spread-out
// reconnects after a server restart (1012).
//
// Events (EventTarget):
//   'state'  detail {state, attempt, retryAt, code}
//            state: 'connecting' | 'connected' | 'reconnecting' | 'offline' | 'stopped'
//   'hello'  detail hello frame — the session is usable (resync here)
//   'frame'  detail any other server frame
//   'close'  detail {code, reason, wasConnected}
//   'fatal'  detail {code, reason} — the server refused us for good (4003)

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 30000;
const HELLO_TIMEOUT_MS = 10000;
const HEARTBEAT_EVERY_MS = 15000;
const PONG_TIMEOUT_MS = 10000;
/** After this many failed attempts in a row we call ourselves offline (and keep trying). */
const OFFLINE_AFTER_ATTEMPTS = 5;

/** Full-jitter-ish back-off: between half and all of min(cap, base * 2^attempt). */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export class Connection extends EventTarget {
  /**
   * @param {{token: () => string, refresh: () => Promise<void>, path?: string}} auth
   */
  constructor(auth) {
    super();
    this.auth = auth;
    this.path = auth.path || '/ws';
    this.ws = null;
    this.state = 'stopped';
    this.attempt = 0;
    this.failuresBeforeHello = 0;
    this.retryAt = null;
    this.retryTimer = null;
    this.helloTimer = null;
    this.heartbeatTimer = null;
    this.lastFrameAt = 0;
    this.pingSentAt = 0;
    this.connectedAt = 0;
    this.running = false;
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => {
      if (this.state !== 'connected') this.setState('offline');
    };
  }

  get connected() {
    return this.state === 'connected' && this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  start() {
    if (this.running) return;
    this.running = true;
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    this.open();
  }

  stop() {
    this.running = false;
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    this.clearTimers();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try {
        ws.close(1000, 'bye');
      } catch {
        // already closed
      }
    }
    this.setState('stopped');
  }

  /** Sends a frame if the session is open; returns whether it was written. */
  send(frame) {
    if (!this.connected) return false;
    try {
      this.ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /** Skip the back-off wait (the "Retry now" button, the browser's online event). */
  reconnectNow() {
    if (!this.running || this.state === 'connected' || this.state === 'connecting') return;
    this.attempt = 0;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.open();
  }

  /** Closes the current socket and reconnects (used after a heartbeat timeout). */
  drop(reason) {
    if (this.ws) {
      try {
        this.ws.close(4000, reason || 'client reconnect');
      } catch {
        // ignore
      }
    }
  }

  setState(state, code) {
    this.state = state;
    this.dispatchEvent(
      new CustomEvent('state', {
        detail: { state, attempt: this.attempt, retryAt: this.retryAt, code },
      }),
    );
  }

  clearTimers() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.helloTimer);
    clearInterval(this.heartbeatTimer);
    this.retryTimer = this.helloTimer = this.heartbeatTimer = null;
  }

  url() {
    const u = new URL(this.path, window.location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.searchParams.set('access_token', this.auth.token());
    return u.toString();
  }

  open() {
    if (!this.running) return;
    this.retryAt = null;
    this.setState(this.attempt === 0 && this.connectedAt === 0 ? 'connecting' : this.waitingState());
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.scheduleReconnect(1006);
      return;
    }
    this.ws = ws;
    let helloSeen = false;
    this.helloTimer = setTimeout(() => {
      if (!helloSeen && this.ws === ws) ws.close(4000, 'no hello');
    }, HELLO_TIMEOUT_MS);

    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== 'object') return;
      if (frame.type === 'hello') {
        helloSeen = true;
        clearTimeout(this.helloTimer);
        this.connectedAt = Date.now();
        this.failuresBeforeHello = 0;
        this.startHeartbeat(ws);
        this.setState('connected');
        this.dispatchEvent(new CustomEvent('hello', { detail: frame }));
        return;
      }
      if (frame.type === 'pong') {
        this.pingSentAt = 0;
        return;
      }
      this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
    };

    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.clearTimers();
      const lived = helloSeen ? Date.now() - this.connectedAt : 0;
      this.dispatchEvent(
        new CustomEvent('close', {
          detail: { code: ev.code, reason: ev.reason, wasConnected: helloSeen },
        }),
      );
      if (!this.running) return;
      if (helloSeen && lived > 5000) this.attempt = 0;
      if (!helloSeen) this.failuresBeforeHello += 1;
      this.handleClose(ev.code, ev.reason);
    };
    // onerror is always followed by onclose.
  }

  startHeartbeat(ws) {
    this.lastFrameAt = Date.now();
    this.pingSentAt = 0;
    this.heartbeatTimer = setInterval(() => {
      if (this.ws !== ws) return;
      const now = Date.now();
      if (this.pingSentAt && now - this.pingSentAt > PONG_TIMEOUT_MS && this.lastFrameAt < this.pingSentAt) {
        ws.close(4000, 'heartbeat timeout');
        return;
      }
      if (now - this.lastFrameAt >= HEARTBEAT_EVERY_MS && !this.pingSentAt) {
        this.pingSentAt = now;
        try {
          ws.send(JSON.stringify({ type: 'ping' }));
        } catch {
          // close will follow
        }
      } else if (this.pingSentAt && this.lastFrameAt >= this.pingSentAt) {
        this.pingSentAt = 0;
      }
    }, 2500);
  }

  waitingState() {
    if (typeof navigator !== 'undefined' && navigator.onLine === false) return 'offline';
    return this.attempt >= OFFLINE_AFTER_ATTEMPTS ? 'offline' : 'reconnecting';
  }

  async handleClose(code, reason) {
    if (code === 4003) {
      this.running = false;
      this.setState('offline', code);
      this.dispatchEvent(new CustomEvent('fatal', { detail: { code, reason } }));
      return;
    }
    let delay;
    let refresh = false;
    if (code === 4001) {
      // Token expired: get a fresh one and come straight back.
      refresh = true;
      delay = 100 + Math.random() * 400;
    } else if (code === 1012) {
      // Service restart (drain): come back soon, but spread out so a whole
      // node's sessions do not reconnect in the same millisecond.
      delay = this.attempt === 0 ? 250 + Math.random() * 1250 : backoffDelay(this.attempt);
    } else if (code === 1013) {
      // Overloaded / we were too slow: back off harder.
      delay = Math.max(2000, backoffDelay(this.attempt + 2));
    } else if (code === 4008) {
      delay = Math.max(5000, backoffDelay(this.attempt + 3));
    } else {
      delay = backoffDelay(this.attempt);
    }
    // Failing before the hello twice in a row may be an HTTP 401 the browser
    // cannot show us: refresh the token before trying again.
    if (this.failuresBeforeHello >= 2 && this.failuresBeforeHello % 2 === 0) refresh = true;
    this.attempt += 1;
    this.scheduleReconnect(code, delay, refresh);
  }

  scheduleReconnect(code, delay = backoffDelay(this.attempt), refresh = false) {
    if (!this.running) return;
    clearTimeout(this.retryTimer);
    this.retryAt = Date.now() + delay;
    this.setState(this.waitingState(), code);
    this.retryTimer = setTimeout(async () => {
      this.retryTimer = null;
      if (refresh) {
        try {
          await this.auth.refresh();
        } catch {
          // keep the old token; the next failure retries the refresh
        }
      }
      this.open();
    }, delay);
  }
}
