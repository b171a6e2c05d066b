// REST calls (same origin) and the dev token.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || 'http_' + status;
  }
}

async function parseError(res) {
  let code;
  let message;
  try {
    const body = await res.json();
    code = body?.error?.code;
    message = body?.error?.message;
  } catch {
    // not JSON
  }
  return new ApiError(res.status, code, message || res.statusText);
}

/** `GET /dev/users`. */
export async function listDemoUsers() {
  const res = await fetch('/dev/users', { headers: { accept: 'application/json' } });
  if (!res.ok) throw await parseError(res);
  const body = await res.json();
  return Array.isArray(body.users) ? body.users : [];
}

/** `POST /dev/token` for a demo user. */
export async function mintToken(user) {
  const res = await fetch('/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ sub: user.id, role: user.role, name: user.name }),
  });
  if (!res.ok) throw await parseError(res);
  const body = await res.json();
  if (!body.token) throw new ApiError(500, 'invalid', 'no token in /dev/token answer');
  return body.token;
}

/** Seconds since the epoch at which a JWT expires (null if unreadable). */
export function tokenExpiry(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    return typeof json.exp === 'number' ? json.exp : null;
  } catch {
    return null;
  }
}

/**
 * The authenticated REST client. `auth` is `{ token(), refresh() }`: a 401 gets
 * one fresh token and one retry.
 */
export class Api {
  constructor(auth) {
    this.auth = auth;
  }

  async request(method, path, body) {
    for (let attempt = 0; ; attempt++) {
      const headers = { accept: 'application/json', authorization: `Bearer ${this.auth.token()}` };
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (res.status === 401 && attempt === 0) {
        await this.auth.refresh();
        continue;
      }
      if (!res.ok) throw await parseError(res);
      if (res.status === 204) return null;
      const text = await res.text();
      return text ? JSON.parse(text) : null;
    }
  }

  /** Chats, most recent activity first. */
  async chats() {
    const body = await this.request('GET', '/api/chats');
    return Array.isArray(body?.chats) ? body.chats : [];
  }

  /** A page of history, ascending by seq. */
  async messages(chatId, { afterSeq, beforeSeq, limit } = {}) {
    const q = new URLSearchParams();
    if (afterSeq !== undefined) q.set('after_seq', String(afterSeq));
    if (beforeSeq !== undefined) q.set('before_seq', String(beforeSeq));
    if (limit !== undefined) q.set('limit', String(limit));
    const qs = q.toString();
    const body = await this.request(
      'GET',
      `/api/chats/${encodeURIComponent(chatId)}/messages${qs ? '?' + qs : ''}`,
    );
    return { messages: body?.messages || [], hasMore: !!body?.has_more };
  }

  /** Marks read over REST (used while the WebSocket is down). */
  async markRead(chatId, upToSeq) {
    await this.request('POST', `/api/chats/${encodeURIComponent(chatId)}/read`, {
      up_to_seq: upToSeq,
    });
  }

  /** `{total, chats: {id: n}}`. */
  async unread() {
    return this.request('GET', '/api/unread');
  }
}
