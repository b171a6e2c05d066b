// What the client knows: chats, their messages (deduplicated and ordered by
// seq), our unacknowledged sends, read marks and typing state.

import { parseTime } from './format.js';

const PEER_READ_KEY = (me, chatId) => `clinic-chat:peer-read:${me}:${chatId}`;
const PENDING_KEY = (me) => `clinic-chat:pending:${me}`;

function loadNumber(key) {
  try {
    const v = Number(localStorage.getItem(key));
    return Number.isFinite(v) && v > 0 ? v : 0;
  } catch {
    return 0;
  }
}

function saveNumber(key, n) {
  try {
    localStorage.setItem(key, String(n));
  } catch {
    // storage full or disabled: receipts are only lost on reload
  }
}

/** One chat as the UI sees it. */
export class ChatEntry {
  constructor(me, json) {
    this.me = me;
    this.id = json.id;
    /** Messages by seq. */
    this.messages = new Map();
    /** Our sends not yet acknowledged, by client_msg_id, in creation order. */
    this.pending = new Map();
    /** History was fetched (the pane shows a continuous range). */
    this.loaded = false;
    this.loading = null;
    /** Seq just below the oldest message we hold for a loaded chat. */
    this.floorSeq = 0;
    this.hasOlder = false;
    this.lastSeq = 0;
    this.lastMessage = null;
    this.unread = 0;
    /** The seq up to which `unread` is believed to account. */
    this.unreadSeq = 0;
    /** Highest seq we told the server we read (this session). */
    this.myReadSeq = 0;
    /** Highest seq the peer is known to have read. */
    this.peerReadSeq = loadNumber(PEER_READ_KEY(me, this.id));
    this.typingUntil = 0;
    this.update(json, { initial: true });
  }

  /** Merges a Chat JSON from the server (list, `chat` event). */
  update(json, { initial = false } = {}) {
    this.patientId = json.patient_id;
    this.doctorId = json.doctor_id;
    this.appointmentIds = json.appointment_ids || [];
    this.createdAt = json.created_at;
    const peer = json.peer || {};
    const peerId = peer.id || (this.me === json.patient_id ? json.doctor_id : json.patient_id);
    this.peer = {
      id: peerId,
      name: peer.name || this.peer?.name || peerId,
      role: peer.role || this.peer?.role || (peerId === json.doctor_id ? 'doctor' : 'patient'),
      online: typeof peer.online === 'boolean' ? peer.online : !!this.peer?.online,
    };
    const serverLast = Number(json.last_seq) || 0;
    if (json.last_message && (!this.lastMessage || json.last_message.seq > this.lastMessage.seq)) {
      this.lastMessage = json.last_message;
    }
    if (serverLast > this.lastSeq) this.lastSeq = serverLast;
    if (typeof json.unread === 'number') {
      if (!initial && this.myReadSeq >= serverLast) {
        // We read everything the server knows of; its count may predate our
        // read mark (counters are updated asynchronously).
        this.unread = 0;
      } else if (initial || serverLast >= this.unreadSeq) {
        this.unread = this.clampUnread(json.unread);
        this.unreadSeq = Math.max(this.unreadSeq, serverLast);
      }
    }
  }

  /** Time of last activity, for sorting the list. */
  activityTime() {
    const pend = [...this.pending.values()].pop();
    const t = parseTime(pend?.createdAt) || parseTime(this.lastMessage?.created_at) || parseTime(this.createdAt);
    return t ? t.getTime() : 0;
  }

  /** Adds a message; false when it was a duplicate (same seq). */
  addMessage(m) {
    if (this.messages.has(m.seq)) return false;
    this.messages.set(m.seq, m);
    this._sorted = null;
    if (m.seq > this.lastSeq) this.lastSeq = m.seq;
    if (!this.lastMessage || m.seq >= this.lastMessage.seq) this.lastMessage = m;
    if (m.sender_id === this.me && m.client_msg_id && this.pending.has(m.client_msg_id)) {
      this.pending.delete(m.client_msg_id);
    }
    return true;
  }

  /** Messages ascending by seq. */
  sorted() {
    if (!this._sorted) this._sorted = [...this.messages.values()].sort((a, b) => a.seq - b.seq);
    return this._sorted;
  }

  maxSeq() {
    const s = this.sorted();
    return s.length ? s[s.length - 1].seq : 0;
  }

  /**
   * Highest seq up to which we hold every message (starting at the floor of the
   * loaded range). This is what we `sync` from.
   */
  contiguousSeq() {
    if (!this.loaded) return this.lastSeq;
    let s = this.floorSeq;
    while (this.messages.has(s + 1)) s += 1;
    return s;
  }

  /** A hole in the loaded range, or a known last_seq beyond what we hold. */
  hasGap() {
    if (!this.loaded) return false;
    const c = this.contiguousSeq();
    return c < this.maxSeq() || c < this.lastSeq;
  }

  /**
   * A server count can never exceed the messages after our read mark that are
   * not ours: clamp to that (counters are computed asynchronously, and one
   * computed before our read mark arrived would otherwise come back).
   */
  clampUnread(count) {
    if (!this.myReadSeq) return count;
    let bound = 0;
    const top = Math.min(this.lastSeq, this.myReadSeq + 10000);
    for (let s = this.myReadSeq + 1; s <= top; s++) {
      const m = this.messages.get(s);
      if (!m || m.sender_id !== this.me) bound += 1;
    }
    return Math.min(count, bound);
  }

  setPeerRead(seq) {
    if (seq > this.peerReadSeq) {
      this.peerReadSeq = seq;
      saveNumber(PEER_READ_KEY(this.me, this.id), seq);
      return true;
    }
    return false;
  }

  isTyping(now = Date.now()) {
    return this.typingUntil > now;
  }
}

/** All chats of the signed-in user. */
export class ChatStore {
  constructor(me) {
    this.me = me;
    this.chats = new Map();
  }

  upsert(json) {
    let entry = this.chats.get(json.id);
    if (entry) entry.update(json);
    else {
      entry = new ChatEntry(this.me, json);
      this.chats.set(json.id, entry);
    }
    return entry;
  }

  get(id) {
    return this.chats.get(id);
  }

  /** Most recent activity first. */
  sorted() {
    return [...this.chats.values()].sort((a, b) => b.activityTime() - a.activityTime());
  }

  totalUnread() {
    let n = 0;
    for (const c of this.chats.values()) n += c.unread;
    return n;
  }

  /** Chats whose peer is this user. */
  byPeer(userId) {
    return [...this.chats.values()].filter((c) => c.peer.id === userId);
  }

  /** Unacked sends, for sessionStorage (survive a reload, re-sent with the same id). */
  savePending() {
    const all = [];
    for (const c of this.chats.values()) {
      for (const p of c.pending.values()) {
        if (p.status !== 'sending') continue;
        all.push({ clientMsgId: p.clientMsgId, chatId: p.chatId, body: p.body, createdAt: p.createdAt });
      }
    }
    try {
      if (all.length) sessionStorage.setItem(PENDING_KEY(this.me), JSON.stringify(all));
      else sessionStorage.removeItem(PENDING_KEY(this.me));
    } catch {
      // ignore
    }
  }

  loadPending() {
    try {
      const all = JSON.parse(sessionStorage.getItem(PENDING_KEY(this.me)) || '[]');
      return Array.isArray(all) ? all : [];
    } catch {
      return [];
    }
  }
}
