// The demo client: pick a demo user, then chat. Plain ES modules, no build.
//
// Data flow: REST gives the chat list and history; one WebSocket (see
// connection.js) gives everything live. After every (re)connect the client
// sends `sync` with the last seq it holds per chat, re-sends unacknowledged
// messages with their original client_msg_id, and re-reads the chat list.
// Messages are kept per chat by seq (duplicates dropped, order by seq), and a
// live message whose seq skips ahead triggers a `sync` for that chat.
//
// Everything user-supplied is rendered with textContent (see dom.js).

import { Api, listDemoUsers, mintToken, tokenExpiry } from './api.js';
import { Connection, backoffDelay } from './connection.js';
import { h, setText, show, randomId } from './dom.js';
import { dayKey, formatDay, formatFull, formatListTime, formatTime, initials, parseTime } from './format.js';
import { ChatStore } from './store.js';

const SESSION_KEY = 'clinic-chat:session';
const TYPING_IDLE_MS = 3000; // stop "typing" after this pause
const TYPING_REFRESH_MS = 3000; // re-send active=true while typing (server forwards ≤ 1 per 2 s)
const TYPING_SHOW_MS = 6000; // hide a peer's indicator if no refresh arrives
const ACK_TIMEOUT_MS = 10000; // re-send (same client_msg_id) if no ack by then
const TOAST_MS = 6000;
const HISTORY_PAGE = 50;
const LIST_REFRESH_MS = 30000; // re-read the list now and then (presence, counts) as a safety net
const MOBILE_QUERY = window.matchMedia('(max-width: 699.98px)');

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------
// Session: who we are and our token.

let session = null; // { user: {id,name,role}, token }
let refreshing = null;
let refreshTimer = null;

const auth = {
  token: () => session?.token || '',
  refresh: async () => {
    if (!session) return;
    if (!refreshing) {
      const user = session.user;
      refreshing = mintToken(user)
        .then((token) => {
          if (session && session.user.id === user.id) {
            session.token = token;
            saveSession();
            scheduleTokenRefresh();
            // Hand the fresh token to the open session too (avoids a 4001).
            conn?.send({ type: 'auth', token });
          }
        })
        .finally(() => {
          refreshing = null;
        });
    }
    return refreshing;
  },
};

function saveSession() {
  try {
    if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    else sessionStorage.removeItem(SESSION_KEY);
  } catch {
    // ignore
  }
}

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
    if (!s?.user?.id || !s.token) return null;
    const exp = tokenExpiry(s.token);
    if (exp && exp * 1000 < Date.now() + 60000) return { user: s.user, token: null };
    return s;
  } catch {
    return null;
  }
}

function scheduleTokenRefresh() {
  clearTimeout(refreshTimer);
  const exp = session && tokenExpiry(session.token);
  if (!exp) return;
  const inMs = Math.max(5000, exp * 1000 - Date.now() - 120000);
  refreshTimer = setTimeout(() => auth.refresh().catch(() => {}), Math.min(inMs, 2 ** 31 - 1));
}

// ---------------------------------------------------------------------------
// App state.

let api = null;
let conn = null;
let store = null;
let openChatId = null;
let requestCounter = 0;
/** request id -> {chatId, clientMsgId} for sends awaiting ack/error. */
const inflight = new Map();
/** chat id -> request id of the sync covering it. */
const syncing = new Map();
/** Typing we announced: {chatId, active, lastActiveAt, stopTimer}. */
let typingOut = { chatId: null, active: false, lastActiveAt: 0, stopTimer: null };
const drafts = new Map();
let renderQueued = false;
/**
 * Server time at which this sign-in's first session began: messages written
 * before it are history we catch up on (no toasts), later ones are news.
 */
let newsSince = null;
let listTimer = null;
let forceScroll = false;

const nextId = (prefix) => `${prefix}${++requestCounter}`;
const isVisible = () => document.visibilityState !== 'hidden';
const openEntry = () => (openChatId ? store?.get(openChatId) : null);

// ---------------------------------------------------------------------------
// User picker.

async function showPicker() {
  $('app').hidden = true;
  $('picker').hidden = false;
  document.title = 'Clinic chat (demo)';
  const status = $('picker-status');
  setText(status, 'Loading demo users…');
  const lists = { doctor: $('picker-doctor-list'), patient: $('picker-patient-list') };
  lists.doctor.replaceChildren();
  lists.patient.replaceChildren();
  let users;
  try {
    users = await listDemoUsers();
  } catch (e) {
    setText(status, `Could not load demo users (${e.message}). Is the gateway running with --dev?`);
    status.classList.add('error');
    return;
  }
  setText(status, '');
  for (const user of users) {
    const list = lists[user.role] || lists.patient;
    const button = h(
      'button',
      {
        type: 'button',
        class: 'user-option',
        dataset: { testid: 'user-option', userId: user.id, role: user.role },
        onclick: () => pickUser(user, button),
      },
      h('span', { class: 'avatar', 'aria-hidden': 'true' }, initials(user.name)),
      h('span', { class: 'user-option-text' },
        h('span', { class: 'user-option-name' }, user.name),
        h('span', { class: 'user-option-role' }, user.role === 'doctor' ? 'Doctor' : 'Patient')),
    );
    list.appendChild(h('li', {}, button));
  }
}

async function pickUser(user, button) {
  button.disabled = true;
  const status = $('picker-status');
  status.classList.remove('error');
  setText(status, `Signing in as ${user.name}…`);
  try {
    const token = await mintToken(user);
    session = { user: { id: user.id, name: user.name, role: user.role }, token };
    saveSession();
    setText(status, '');
    await startApp();
  } catch (e) {
    status.classList.add('error');
    setText(status, `Could not sign in: ${e.message}`);
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------
// Start / stop.

async function startApp() {
  stopApp();
  $('picker').hidden = true;
  $('app').hidden = false;
  setText($('me-name'), session.user.name);
  $('me-name').title = `${session.user.id} (${session.user.role})`;
  store = new ChatStore(session.user.id);
  api = new Api(auth);
  scheduleTokenRefresh();

  conn = new Connection(auth);
  conn.addEventListener('state', (e) => {
    renderConnection(e.detail);
    scheduleRender(); // presence is unknown while disconnected
  });
  conn.addEventListener('hello', (e) => onConnected(e.detail));
  conn.addEventListener('frame', (e) => onFrame(e.detail));
  conn.addEventListener('close', () => onDisconnected());
  conn.addEventListener('fatal', () => notice('The server refused this session (forbidden).', 'error'));

  try {
    const chats = await api.chats();
    for (const c of chats) store.upsert(c);
  } catch (e) {
    notice(`Could not load conversations: ${e.message}`, 'error');
  }
  restorePending();
  renderAll();
  conn.start();
}

function stopApp() {
  stopTyping();
  conn?.stop();
  conn = null;
  clearTimeout(refreshTimer);
  clearInterval(listTimer);
  for (const c of store?.chats.values() || []) {
    for (const p of c.pending.values()) clearTimeout(p.timer);
  }
  inflight.clear();
  syncing.clear();
  drafts.clear();
  newsSince = null;
  openChatId = null;
  store = null;
  msgEls.clear();
  listEls.clear();
  $('chat-list').replaceChildren();
  $('message-items').replaceChildren();
  $('toasts').replaceChildren();
  toastTimers.clear();
}

function switchUser() {
  stopApp();
  session = null;
  saveSession();
  showPicker();
}

// ---------------------------------------------------------------------------
// Connection lifecycle.

function onConnected(hello) {
  if (newsSince === null) {
    const t = Date.parse(hello?.server_time);
    newsSince = (Number.isFinite(t) ? t : Date.now()) - 1000;
  }
  // 1. Catch up: everything after the last seq we hold, per chat.
  requestSync([...store.chats.values()]);
  // 2. Re-send what was never acknowledged (same client_msg_id: idempotent).
  for (const c of store.chats.values()) pump(c);
  // 3. Re-read the list (new chats, presence, unread counts), now and then.
  refreshChats();
  clearInterval(listTimer);
  listTimer = setInterval(() => {
    if (conn?.connected && isVisible()) refreshChats();
  }, LIST_REFRESH_MS);
  scheduleRender();
}

function onDisconnected() {
  clearInterval(listTimer);
  inflight.clear();
  for (const c of store?.chats.values() || []) {
    for (const p of c.pending.values()) {
      clearTimeout(p.timer);
      p.timer = null;
      p.busy = false;
    }
  }
  syncing.clear();
  typingOut.active = false;
  clearTimeout(typingOut.stopTimer);
  // A peer's typing indicator cannot be trusted any more.
  for (const c of store?.chats.values() || []) c.typingUntil = 0;
  scheduleRender();
}

async function refreshChats() {
  const myStore = store;
  try {
    const chats = await api.chats();
    if (store !== myStore) return;
    for (const json of chats) {
      const entry = store.upsert(json);
      // The list knows of a later seq than we hold: fetch what we missed.
      if (conn?.connected && !syncing.has(entry.id) && entry.hasGap()) fillGap(entry);
      if (entry.id === openChatId && isVisible()) markRead(entry);
    }
    scheduleRender();
  } catch (e) {
    console.warn('refreshing chats failed', e);
  }
}

function requestSync(entries) {
  if (!conn?.connected || !entries.length) return;
  const id = nextId('sync-');
  const chats = {};
  for (const e of entries) {
    if (syncing.has(e.id)) continue;
    chats[e.id] = e.contiguousSeq();
    syncing.set(e.id, id);
  }
  if (!Object.keys(chats).length) return;
  if (!conn.send({ type: 'sync', id, chats })) {
    for (const chatId of Object.keys(chats)) syncing.delete(chatId);
  }
}

function onFrame(f) {
  switch (f.type) {
    case 'message':
      if (f.message) onMessage(f.message);
      break;
    case 'ack':
      onAck(f);
      break;
    case 'error':
      onError(f);
      break;
    case 'synced':
      onSynced(f);
      break;
    case 'read':
      onRead(f);
      break;
    case 'typing':
      onTyping(f);
      break;
    case 'unread':
      onUnread(f);
      break;
    case 'presence':
      for (const c of store.byPeer(f.user_id)) c.peer.online = !!f.online;
      scheduleRender();
      break;
    case 'chat':
      if (f.chat) {
        store.upsert(f.chat);
        scheduleRender();
      }
      break;
    default:
      break; // unknown frames are ignored (forward compatible)
  }
}

function onMessage(m) {
  const entry = store.get(m.chat_id);
  if (!entry) {
    // A chat we do not know yet: re-read the list, then take the message.
    refreshChats().then(() => store?.get(m.chat_id) && onMessage(m));
    return;
  }
  const live = !syncing.has(entry.id);
  const gap = live && entry.loaded && m.seq > entry.contiguousSeq() + 1;
  resolvePending(entry, m);
  if (!entry.addMessage(m)) return; // duplicate seq
  ownMessageRead(entry, m);
  if (m.sender_id !== session.user.id) {
    entry.typingUntil = 0;
    const viewing = entry.id === openChatId && isVisible();
    if (viewing) {
      markRead(entry);
    } else if (m.seq > entry.unreadSeq && m.seq > entry.myReadSeq) {
      entry.unread += 1;
      entry.unreadSeq = m.seq;
    }
    const news = (parseTime(m.created_at)?.getTime() ?? Infinity) >= (newsSince ?? 0);
    if ((entry.id !== openChatId || !isVisible()) && news) toast(entry, m);
  }
  if (gap) requestSync([entry]);
  scheduleRender();
}

function onSynced(f) {
  for (const [chatId, id] of [...syncing]) {
    if (id === f.id || f.id === undefined) syncing.delete(chatId);
  }
  // A hole that is still there: the session will not send a seq twice (the
  // server believes it delivered it), so read the range from history instead.
  for (const c of store.chats.values()) {
    if (!syncing.has(c.id) && c.hasGap()) fillGap(c);
  }
  const open = openEntry();
  if (open && isVisible()) markRead(open);
  scheduleRender();
}

/** Reads the messages after our contiguous range over REST (a few pages at most). */
async function fillGap(entry) {
  if (entry.filling) return;
  entry.filling = true;
  try {
    for (let page = 0; page < 5 && entry.hasGap(); page++) {
      const from = entry.contiguousSeq();
      const res = await api.messages(entry.id, { afterSeq: from, limit: 200 });
      for (const m of res.messages) {
        resolvePending(entry, m);
        entry.addMessage(m);
      }
      if (!res.hasMore || entry.contiguousSeq() === from) break;
    }
  } catch (e) {
    console.warn('filling a gap failed', e);
  } finally {
    entry.filling = false;
    if (entry.id === openChatId && isVisible()) markRead(entry);
    scheduleRender();
  }
}

function onRead(f) {
  const entry = store.get(f.chat_id);
  if (!entry) return;
  if (f.user_id === session.user.id) {
    // Another of our sessions read it.
    entry.myReadSeq = Math.max(entry.myReadSeq, f.up_to_seq);
    if (f.up_to_seq >= entry.lastSeq) entry.unread = 0;
  } else {
    entry.setPeerRead(f.up_to_seq);
  }
  scheduleRender();
}

function onTyping(f) {
  if (f.user_id === session.user.id) return;
  const entry = store.get(f.chat_id);
  if (!entry) return;
  entry.typingUntil = f.active ? Date.now() + TYPING_SHOW_MS : 0;
  if (f.active) setTimeout(scheduleRender, TYPING_SHOW_MS + 50);
  scheduleRender();
}

function onUnread(f) {
  const entry = store.get(f.chat_id);
  if (!entry) {
    refreshChats();
    return;
  }
  if (entry.myReadSeq >= entry.lastSeq) {
    // We read everything we know of; the count is from a moment before our
    // read mark reached the persister. Its next count will be 0.
    entry.unread = 0;
  } else {
    entry.unread = entry.clampUnread(Number(f.count) || 0);
  }
  scheduleRender();
}

// ---------------------------------------------------------------------------
// Reading.

function markRead(entry) {
  const upTo = Math.max(entry.maxSeq(), entry.lastSeq);
  entry.unread = 0;
  entry.unreadSeq = Math.max(entry.unreadSeq, upTo);
  if (upTo <= 0 || upTo <= entry.myReadSeq) {
    scheduleRender();
    return;
  }
  entry.myReadSeq = upTo;
  const frame = { type: 'read', chat_id: entry.id, up_to_seq: upTo };
  if (!conn?.send(frame)) {
    api.markRead(entry.id, upTo).catch((e) => {
      console.warn('mark read failed', e);
      entry.myReadSeq = 0; // try again next time
    });
  }
  scheduleRender();
}

// ---------------------------------------------------------------------------
// Sending.

function restorePending() {
  for (const p of store.loadPending()) {
    const entry = store.get(p.chatId);
    if (!entry || !p.clientMsgId || !p.body) continue;
    entry.pending.set(p.clientMsgId, { ...p, status: 'sending', attempts: 0, timer: null, busy: false });
  }
}

function sendMessage(entry, text) {
  const body = text.replace(/\r\n?/g, '\n');
  if (!body.trim()) return false;
  const p = {
    clientMsgId: randomId('c-'),
    chatId: entry.id,
    body,
    createdAt: new Date().toISOString(),
    status: 'sending',
    attempts: 0,
    timer: null,
    busy: false,
  };
  entry.pending.set(p.clientMsgId, p);
  store.savePending();
  stopTyping();
  pump(entry);
  forceScroll = true;
  scheduleRender();
  return true;
}

/**
 * Sends the chat's oldest unacknowledged message unless one is already on its
 * way (or waiting to be retried): one at a time per chat, so the order the
 * user wrote in is the seq order, even across rate limits and reconnects.
 */
function pump(entry) {
  if (!conn?.connected) return; // everything goes out after the next hello
  for (const p of entry.pending.values()) {
    if (p.status !== 'sending') continue; // failed ones wait for the user
    if (!p.busy) transmit(p);
    return;
  }
}

function transmit(p) {
  clearTimeout(p.timer);
  p.timer = null;
  p.busy = false;
  if (!conn?.connected || store?.get(p.chatId)?.pending.get(p.clientMsgId) !== p) return;
  const id = nextId('send-');
  inflight.set(id, { chatId: p.chatId, clientMsgId: p.clientMsgId });
  p.requestId = id;
  p.attempts += 1;
  const ok = conn.send({
    type: 'send',
    id,
    chat_id: p.chatId,
    client_msg_id: p.clientMsgId,
    body: p.body,
  });
  if (!ok) {
    inflight.delete(id);
    return;
  }
  p.busy = true;
  // No ack in time (lost on a half-dead connection?): send again, same id.
  p.timer = setTimeout(() => {
    if (p.status === 'sending') transmit(p);
  }, ACK_TIMEOUT_MS);
}

/** Retries `p` after `ms` (it stays first in its chat's queue meanwhile). */
function retryLater(p, ms) {
  clearTimeout(p.timer);
  p.busy = true;
  p.timer = setTimeout(() => transmit(p), ms);
}

function resolvePending(entry, m) {
  if (m.sender_id !== session.user.id || !m.client_msg_id) return;
  const p = entry.pending.get(m.client_msg_id);
  if (!p) return;
  clearTimeout(p.timer);
  entry.pending.delete(m.client_msg_id);
  store.savePending();
  pump(entry);
}

function onAck(f) {
  const m = f.message;
  const req = f.id !== undefined ? inflight.get(f.id) : null;
  if (f.id !== undefined) inflight.delete(f.id);
  if (!m) return;
  const entry = store.get(m.chat_id || req?.chatId);
  if (!entry) return;
  const gap = entry.loaded && !syncing.has(entry.id) && m.seq > entry.contiguousSeq() + 1;
  resolvePending(entry, m);
  entry.addMessage(m);
  ownMessageRead(entry, m);
  if (gap) requestSync([entry]);
  scheduleRender();
}

/** Caught up before our own message means caught up after it (unread counts only the peer's). */
function ownMessageRead(entry, m) {
  if (m.sender_id === session.user.id && entry.myReadSeq >= m.seq - 1) entry.myReadSeq = m.seq;
}

function onError(f) {
  const req = f.id !== undefined ? inflight.get(f.id) : null;
  if (!req) {
    if (typeof f.id === 'string' && f.id.startsWith('sync-')) {
      for (const [chatId, id] of [...syncing]) if (id === f.id) syncing.delete(chatId);
    }
    if (f.code !== 'rate_limited') console.warn('server error', f);
    return;
  }
  inflight.delete(f.id);
  const entry = store.get(req.chatId);
  const p = entry?.pending.get(req.clientMsgId);
  if (!p || p.requestId !== f.id) return; // an answer to an older attempt
  switch (f.code) {
    case 'rate_limited':
      retryLater(p, Math.max(100, Number(f.retry_after_ms) || 1000));
      break;
    case 'unavailable':
      retryLater(p, backoffDelay(Math.min(p.attempts, 6)));
      break;
    case 'unauthorized':
      p.busy = true;
      auth.refresh().finally(() => transmit(p));
      break;
    default:
      // invalid, too_large, forbidden, not_found: sending again will not help.
      clearTimeout(p.timer);
      p.busy = false;
      p.status = 'failed';
      p.error = f.message || f.code;
      store.savePending();
      pump(entry); // the next one may go
      break;
  }
  scheduleRender();
}

function retryFailed(entry, p) {
  p.status = 'sending';
  p.error = null;
  p.attempts = 0;
  p.busy = false;
  store.savePending();
  pump(entry);
  scheduleRender();
}

function discardFailed(entry, p) {
  clearTimeout(p.timer);
  entry.pending.delete(p.clientMsgId);
  store.savePending();
  pump(entry);
  scheduleRender();
}

// ---------------------------------------------------------------------------
// Typing (outgoing).

function onComposerInput() {
  const entry = openEntry();
  const input = $('composer-input');
  autosize(input);
  if (!entry) return;
  drafts.set(entry.id, input.value);
  if (!input.value.trim()) {
    stopTyping();
    return;
  }
  const now = Date.now();
  if (typingOut.chatId !== entry.id) stopTyping();
  if (!typingOut.active || now - typingOut.lastActiveAt >= TYPING_REFRESH_MS) {
    if (conn?.send({ type: 'typing', chat_id: entry.id, active: true })) {
      typingOut.active = true;
      typingOut.chatId = entry.id;
      typingOut.lastActiveAt = now;
    }
  }
  clearTimeout(typingOut.stopTimer);
  typingOut.stopTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(typingOut.stopTimer);
  typingOut.stopTimer = null;
  if (typingOut.active && typingOut.chatId) {
    conn?.send({ type: 'typing', chat_id: typingOut.chatId, active: false });
  }
  typingOut.active = false;
  typingOut.lastActiveAt = 0;
}

function autosize(input) {
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight + 2, 160)}px`;
}

// ---------------------------------------------------------------------------
// Opening chats and history.

function openChat(chatId, { focus = true } = {}) {
  const entry = store?.get(chatId);
  if (!entry) return;
  if (openChatId !== chatId) {
    stopTyping();
    openChatId = chatId;
    msgEls.clear();
    $('message-items').replaceChildren();
    const input = $('composer-input');
    input.value = drafts.get(chatId) || '';
    autosize(input);
    forceScroll = true;
  }
  dismissToast(chatId);
  markRead(entry);
  if (!entry.loaded) loadLatest(entry);
  renderAll();
  // On a phone, focusing the box would pop the keyboard over the history.
  if (focus && !MOBILE_QUERY.matches) $('composer-input').focus({ preventScroll: true });
}

function closeChat() {
  const left = openChatId;
  stopTyping();
  openChatId = null;
  msgEls.clear();
  $('message-items').replaceChildren();
  renderAll();
  if (left) listEls.get(left)?.querySelector('button')?.focus();
}

async function loadLatest(entry) {
  if (entry.loading) return entry.loading;
  entry.loading = (async () => {
    try {
      const page = await api.messages(entry.id, { limit: HISTORY_PAGE });
      for (const m of page.messages) {
        resolvePending(entry, m);
        entry.addMessage(m);
      }
      entry.floorSeq = page.messages.length ? page.messages[0].seq - 1 : 0;
      entry.hasOlder = page.hasMore && entry.floorSeq > 0;
      entry.loaded = true;
      if (entry.hasGap()) requestSync([entry]);
      if (entry.id === openChatId && isVisible()) markRead(entry);
      forceScroll = entry.id === openChatId;
    } catch (e) {
      notice(`Could not load messages: ${e.message}`, 'error');
    } finally {
      entry.loading = null;
      scheduleRender();
    }
  })();
  return entry.loading;
}

async function loadOlder(entry) {
  if (entry.loadingOlder || !entry.hasOlder) return;
  entry.loadingOlder = true;
  const box = $('messages');
  const before = box.scrollHeight - box.scrollTop;
  try {
    const page = await api.messages(entry.id, { beforeSeq: entry.floorSeq + 1, limit: HISTORY_PAGE });
    for (const m of page.messages) entry.addMessage(m);
    if (page.messages.length) entry.floorSeq = page.messages[0].seq - 1;
    entry.hasOlder = page.hasMore && entry.floorSeq > 0;
  } catch (e) {
    notice(`Could not load earlier messages: ${e.message}`, 'error');
  } finally {
    entry.loadingOlder = false;
  }
  renderAll();
  box.scrollTop = box.scrollHeight - before; // keep the reader's place
}

// ---------------------------------------------------------------------------
// Rendering.

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    renderAll();
  });
}

function renderAll() {
  if (!store) return;
  renderList();
  renderTotal();
  renderConversation();
  $('layout').dataset.view = openChatId ? 'chat' : 'list';
}

const CONNECTION_TEXT = {
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  stopped: 'Offline',
};
let countdownTimer = null;

function renderConnection({ state, retryAt }) {
  const box = $('connection');
  box.dataset.state = state;
  const text = $('connection-text');
  clearInterval(countdownTimer);
  const update = () => {
    let s = CONNECTION_TEXT[state] || state;
    if ((state === 'reconnecting' || state === 'offline') && retryAt) {
      const secs = Math.ceil((retryAt - Date.now()) / 1000);
      if (secs >= 2) s = `${state === 'offline' ? 'Offline' : 'Reconnecting'} — retry in ${secs} s`;
    }
    setText(text, s);
  };
  update();
  if (retryAt && state !== 'connected') countdownTimer = setInterval(update, 1000);
  show($('connection-retry'), state === 'reconnecting' || state === 'offline');
}

function renderTotal() {
  const total = store.totalUnread();
  const badge = $('total-unread');
  setText(badge, total > 99 ? '99+' : String(total));
  setText($('total-unread-text'), total ? `${total} unread message${total === 1 ? '' : 's'}` : '');
  badge.dataset.count = String(total);
  show(badge, total > 0);
  document.title = `${total > 0 ? `(${total}) ` : ''}Clinic chat — ${session.user.name}`;
}

/** chat id -> <li>. */
const listEls = new Map();

function previewOf(entry) {
  if (entry.isTyping()) return { text: 'typing…', typing: true };
  const pend = [...entry.pending.values()].pop();
  if (pend) return { text: `You: ${pend.body}`, time: parseTime(pend.createdAt) };
  const m = entry.lastMessage;
  if (!m) return { text: 'No messages yet', time: parseTime(entry.createdAt), empty: true };
  const who = m.sender_id === session.user.id ? 'You: ' : '';
  return { text: who + m.body.replace(/\s+/g, ' '), time: parseTime(m.created_at) };
}

function buildListItem(chatId) {
  const dot = h('span', { class: 'online-dot', dataset: { testid: 'online-dot' } });
  const li = h(
    'li',
    {},
    h(
      'button',
      { type: 'button', class: 'chat-item', dataset: { testid: 'chat-item', chatId }, onclick: () => openChat(chatId) },
      h('span', { class: 'avatar-wrap' }, h('span', { class: 'avatar', 'aria-hidden': 'true' }), dot),
      h(
        'span',
        { class: 'chat-item-main' },
        h('span', { class: 'chat-item-row' },
          h('span', { class: 'chat-name', dataset: { testid: 'chat-name' } }),
          h('time', { class: 'chat-time', dataset: { testid: 'chat-time' } })),
        h('span', { class: 'chat-item-row' },
          h('span', { class: 'chat-preview', dataset: { testid: 'chat-preview' } }),
          h('span', { class: 'badge', dataset: { testid: 'unread-badge' } })),
      ),
      h('span', { class: 'visually-hidden chat-item-sr' }),
    ),
  );
  return li;
}

function renderList() {
  const ul = $('chat-list');
  const entries = store.sorted();
  show($('chat-list-empty'), entries.length === 0);
  const seen = new Set();
  entries.forEach((entry, i) => {
    seen.add(entry.id);
    let li = listEls.get(entry.id);
    if (!li) {
      li = buildListItem(entry.id);
      listEls.set(entry.id, li);
    }
    const button = li.firstChild;
    button.dataset.peerId = entry.peer.id;
    button.dataset.unread = String(entry.unread);
    if (entry.id === openChatId) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
    setText(button.querySelector('.avatar'), initials(entry.peer.name));
    const dot = button.querySelector('.online-dot');
    const live = !!conn?.connected;
    dot.dataset.online = String(live && entry.peer.online);
    dot.dataset.known = String(live);
    dot.title = !live ? 'Status unknown (disconnected)' : entry.peer.online ? 'Online' : 'Offline';
    setText(button.querySelector('.chat-name'), entry.peer.name);
    const p = previewOf(entry);
    const time = button.querySelector('.chat-time');
    setText(time, p.time ? formatListTime(p.time) : '');
    if (p.time) time.setAttribute('datetime', p.time.toISOString());
    const preview = button.querySelector('.chat-preview');
    setText(preview, p.text);
    preview.classList.toggle('is-typing', !!p.typing);
    preview.classList.toggle('is-empty', !!p.empty);
    const badge = button.querySelector('.badge');
    setText(badge, entry.unread > 99 ? '99+' : String(entry.unread));
    badge.dataset.count = String(entry.unread);
    badge.setAttribute('aria-hidden', 'true');
    show(badge, entry.unread > 0);
    // One sentence for screen readers (the visible parts are aria-hidden-free too,
    // but this gives the unread count words).
    setText(
      button.querySelector('.chat-item-sr'),
      `${!live ? '' : entry.peer.online ? 'online' : 'offline'}${entry.unread ? `, ${entry.unread} unread` : ''}`,
    );
    if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
  });
  for (const [id, li] of listEls) {
    if (!seen.has(id)) {
      li.remove();
      listEls.delete(id);
    }
  }
}

/** render key -> element, for the open chat. */
const msgEls = new Map();

function messageKey(m) {
  return m.sender_id === session.user.id && m.client_msg_id ? `c:${m.client_msg_id}` : `m:${m.seq}`;
}

function buildMessage(own) {
  const status = own
    ? h('span', { class: 'msg-status', dataset: { testid: 'message-status' } },
        h('span', { class: 'msg-status-icon', 'aria-hidden': 'true' }),
        h('span', { class: 'visually-hidden msg-status-text' }))
    : null;
  return h(
    'div',
    { class: `msg ${own ? 'msg-own' : 'msg-peer'}`, dataset: { testid: 'message', own: String(own) } },
    h(
      'div',
      { class: 'bubble' },
      h('span', { class: 'visually-hidden msg-sender' }),
      h('div', { class: 'msg-body', dataset: { testid: 'message-body' } }),
      h('div', { class: 'msg-meta' }, h('time', { class: 'msg-time', dataset: { testid: 'message-time' } }), status),
      own ? h('div', { class: 'msg-failed', hidden: true }) : null,
    ),
  );
}

function updateMessage(el, { m, p, entry }) {
  const own = el.dataset.own === 'true';
  const body = m ? m.body : p.body;
  const bodyEl = el.querySelector('.msg-body');
  if (bodyEl.textContent !== body) bodyEl.textContent = body; // text, never HTML
  setText(el.querySelector('.msg-sender'), own ? 'You:' : `${entry.peer.name}:`);
  const when = parseTime(m ? m.created_at : p.createdAt) || new Date();
  const time = el.querySelector('.msg-time');
  setText(time, formatTime(when));
  time.setAttribute('datetime', when.toISOString());
  time.title = formatFull(when);
  if (m) {
    el.dataset.seq = String(m.seq);
    el.dataset.messageId = m.id;
  }
  if (!own) return;
  if (m?.client_msg_id || p) el.dataset.clientMsgId = m?.client_msg_id || p.clientMsgId;
  let status;
  if (m) status = m.seq <= entry.peerReadSeq ? 'read' : 'sent';
  else status = p.status; // sending | failed
  el.dataset.status = status;
  const st = el.querySelector('.msg-status');
  st.dataset.status = status;
  const icon = { sending: '', sent: '✓', read: '✓✓', failed: '!' }[status]; // sending: a CSS clock
  const label = { sending: 'Sending', sent: 'Sent', read: 'Read', failed: 'Not sent' }[status];
  setText(st.querySelector('.msg-status-icon'), icon);
  setText(st.querySelector('.msg-status-text'), label);
  st.title = label;
  const failed = el.querySelector('.msg-failed');
  if (status === 'failed') {
    if (failed.hidden || failed.dataset.error !== p.error) {
      failed.dataset.error = p.error || '';
      failed.replaceChildren(
        h('span', { class: 'msg-failed-text' }, `Not sent: ${p.error || 'error'}`),
        h('button', { type: 'button', class: 'link-button', dataset: { testid: 'retry-send' }, onclick: () => retryFailed(entry, p) }, 'Retry'),
        h('button', { type: 'button', class: 'link-button', dataset: { testid: 'discard-send' }, onclick: () => discardFailed(entry, p) }, 'Discard'),
      );
      failed.hidden = false;
    }
  } else if (!failed.hidden) {
    failed.hidden = true;
    failed.replaceChildren();
  }
}

function renderConversation() {
  const entry = openEntry();
  show($('no-chat'), !entry);
  show($('chat-view'), !!entry);
  if (!entry) return;

  setText($('chat-avatar'), initials(entry.peer.name));
  $('chat-avatar').dataset.online = String(entry.peer.online);
  setText($('chat-title'), entry.peer.name);
  const presence = $('chat-presence');
  const typing = entry.isTyping();
  const live = !!conn?.connected;
  // While we are disconnected we do not know who is online.
  setText(presence, !live ? 'Status unknown' : entry.peer.online ? 'Online' : 'Offline');
  presence.dataset.online = String(live && entry.peer.online);
  show(presence, !typing);
  const typingEl = $('typing');
  setText(typingEl, typing ? `${entry.peer.name} is typing…` : '');
  show(typingEl, typing);

  const box = $('messages');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;

  const items = [];
  let lastDay = null;
  const addDay = (d) => {
    const k = dayKey(d);
    if (k !== lastDay) {
      lastDay = k;
      items.push({ key: `d:${k}`, day: d });
    }
  };
  for (const m of entry.sorted()) {
    addDay(parseTime(m.created_at) || new Date());
    items.push({ key: messageKey(m), m });
  }
  for (const p of entry.pending.values()) {
    addDay(parseTime(p.createdAt) || new Date());
    items.push({ key: `c:${p.clientMsgId}`, p });
  }

  const container = $('message-items');
  const seen = new Set();
  items.forEach((item, i) => {
    seen.add(item.key);
    let el = msgEls.get(item.key);
    if (item.day) {
      if (!el) {
        el = h('div', { class: 'day-separator', role: 'separator', dataset: { testid: 'date-separator' } }, h('span'));
        msgEls.set(item.key, el);
      }
      setText(el.firstChild, formatDay(item.day));
    } else {
      const own = item.m ? item.m.sender_id === session.user.id : true;
      if (!el) {
        el = buildMessage(own);
        msgEls.set(item.key, el);
      }
      updateMessage(el, { m: item.m, p: item.p, entry });
    }
    if (container.children[i] !== el) container.insertBefore(el, container.children[i] || null);
  });
  for (const [key, el] of msgEls) {
    if (!seen.has(key)) {
      el.remove();
      msgEls.delete(key);
    }
  }

  box.dataset.loaded = String(entry.loaded);
  show($('history-loading'), !entry.loaded);
  if (entry.loaded && items.length === 0 && !container.querySelector('.empty-chat')) {
    container.appendChild(h('p', { class: 'empty-chat' }, `No messages yet. Say hello to ${entry.peer.name}.`));
  } else if (items.length) container.querySelector('.empty-chat')?.remove();

  show($('load-older'), entry.loaded && entry.hasOlder);
  $('load-older').disabled = !!entry.loadingOlder;
  show($('history-start'), entry.loaded && !entry.hasOlder && items.length > 0);

  if (forceScroll || atBottom) {
    box.scrollTop = box.scrollHeight;
    if (entry.loaded) forceScroll = false;
  }
}

// ---------------------------------------------------------------------------
// Toasts and notices.

const toastTimers = new Map();

function toast(entry, m) {
  const region = $('toasts');
  let el = region.querySelector(`[data-chat-id="${CSS.escape(entry.id)}"]`);
  if (!el) {
    el = h(
      'div',
      { class: 'toast', role: 'status', dataset: { testid: 'toast', chatId: entry.id } },
      h(
        'button',
        { type: 'button', class: 'toast-open', onclick: () => openChat(entry.id) },
        h('span', { class: 'avatar avatar-small', 'aria-hidden': 'true' }, initials(entry.peer.name)),
        h('span', { class: 'toast-text' },
          h('strong', { class: 'toast-title' }),
          h('span', { class: 'toast-body', dataset: { testid: 'toast-body' } })),
      ),
      h('button', { type: 'button', class: 'icon-button toast-close', 'aria-label': 'Dismiss notification', onclick: () => dismissToast(entry.id) }, '×'),
    );
    region.appendChild(el);
    while (region.querySelectorAll('.toast').length > 3) region.querySelector('.toast').remove();
    el.count = 0;
  }
  el.count += 1;
  setText(el.querySelector('.toast-title'), el.count > 1 ? `${entry.peer.name} (${el.count} new)` : entry.peer.name);
  setText(el.querySelector('.toast-body'), m.body.replace(/\s+/g, ' ').slice(0, 140));
  clearTimeout(toastTimers.get(entry.id));
  toastTimers.set(entry.id, setTimeout(() => dismissToast(entry.id), TOAST_MS));
}

function dismissToast(chatId) {
  clearTimeout(toastTimers.get(chatId));
  toastTimers.delete(chatId);
  $('toasts').querySelector(`[data-chat-id="${CSS.escape(chatId)}"]`)?.remove();
}

function notice(text, kind = 'info') {
  const region = $('toasts');
  const el = h(
    'div',
    { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status', dataset: { testid: 'notice' } },
    h('span', { class: 'toast-text' }, text),
    h('button', { type: 'button', class: 'icon-button toast-close', 'aria-label': 'Dismiss notification', onclick: () => el.remove() }, '×'),
  );
  region.appendChild(el);
  setTimeout(() => el.remove(), TOAST_MS + 2000);
}

// ---------------------------------------------------------------------------
// Wiring.

function wire() {
  $('switch-user').addEventListener('click', switchUser);
  $('connection-retry').addEventListener('click', () => conn?.reconnectNow());
  $('back').addEventListener('click', closeChat);
  $('load-older').addEventListener('click', () => {
    const e = openEntry();
    if (e) loadOlder(e);
  });
  const input = $('composer-input');
  input.addEventListener('input', onComposerInput);
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    } else if (e.key === 'Escape' && MOBILE_QUERY.matches) {
      closeChat();
    }
  });
  input.addEventListener('blur', () => {
    if (!input.value.trim()) stopTyping();
  });
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const entry = openEntry();
    if (!entry) return;
    if (sendMessage(entry, input.value)) {
      input.value = '';
      drafts.delete(entry.id);
      autosize(input);
    }
    input.focus();
  });
  document.addEventListener('visibilitychange', () => {
    if (!store) return;
    if (isVisible()) {
      if (conn?.connected) refreshChats();
      const e = openEntry();
      if (e) {
        markRead(e);
        dismissToast(e.id);
      }
    } else stopTyping();
  });
  window.addEventListener('pagehide', () => stopTyping());
}

async function boot() {
  wire();
  const saved = loadSession();
  if (saved?.user) {
    session = saved;
    try {
      if (!session.token) {
        session.token = await mintToken(session.user);
        saveSession();
      }
      await startApp();
      return;
    } catch {
      session = null;
      saveSession();
    }
  }
  await showPicker();
}

boot();
